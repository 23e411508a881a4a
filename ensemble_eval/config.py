"""The typed run configuration: built-in defaults < preset (--protocol) < YAML file (--config)
< command line.

Every default lives here. A YAML file may set any field of `RunConfig` (same names, with
dashes or underscores) and a `protocol:` mapping describing the crop scheme (see
ensemble_eval/presets/googlenet-144.yaml), or `protocol: NAME` to start from a preset; the
command line overrides both.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .crops import BACKENDS, CropScheme, SchemeError
from .errors import UserError, first_line, short_repr
from .fileio import read_text
from .merge_modes import DEFAULT_MERGE, MERGES
from .merge_modes import describe as describe_merges
from .views import VIEW_MODES


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


DEFAULT_BATCH_SIZE = {"cpu": 16, "cuda": 288}  # crops per forward pass, where auto does not time
DEFAULT_WORKERS = min(8, usable_cpus())
WORKERS_PER_CPU = 4  # loader processes per usable CPU, at most (each holds its own decoding pipeline)
MAX_WORKERS = 64  # loader processes, on any machine
# A --config file: its size (the presets are under 2 KB; the pure-Python YAML parser takes
# seconds per 100 KB), its nesting depth and its node count with aliases expanded (a
# "billion laughs" alias bomb is a few hundred bytes).
MAX_CONFIG_BYTES = 128 * 1024
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")  # forward passes in fp32, or under bf16/fp16 autocast
DEFAULT_SAVE_EVERY = 32  # images per process between progress saves
DEFAULT_SAVE_INTERVAL = 60.0  # seconds between progress saves
DEFAULT_CURVE_SAMPLES = 64  # member subsets per ensemble size, when there are more
DEFAULT_SEED = 0
GROUPS = ("inputs", "protocol", "analysis", "execution", "outputs")  # of the main command's --help


class ConfigError(UserError):
    """A configuration value or file that cannot be used."""


def option(default: Any = None, help: str = "", *, group: str | None = None, factory=None, **spec: Any):
    """A RunConfig field that is also a command-line option (when `group` is given).

    `help` may say `{default}` (filled with `shown`, or else the default). `spec`: `kind` (how a
    value is checked, here and by the command line: positive_int, positive_float, count,
    batch_size, paths; a bool or choices need none), `choices`, `metavar`, `flag` (the option's
    spelling when it is not --<name>: "--no-channels-last" sets the field false), `short` ("-v"),
    `shown` (the default as --help words it)."""
    shown = spec.get("shown", default)
    meta = {"help": help.replace("{default}", str(shown)), "group": group, **spec}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Everything one evaluation run needs to know; each option's help and check are here."""

    # inputs
    models: list[str] = option(
        factory=list,
        group="inputs",
        kind="paths",
        metavar="CKPT",
        help="checkpoint files, shell globs (quoted or not), torchvision:<builder>[:<WEIGHTS>] or timm:<name>",
    )
    data: str | None = option(
        group="inputs",
        metavar="DIR",
        help="image root: one folder per WordNet id or class index (ImageNet-V2), an ImageNet-C tree "
        "(<corruption>/<severity>/<wnid>/), a flat folder with --labels, or shards: a folder of .parquet "
        "or .tar files, a quoted glob ('val-*.parquet') or one shard file",
    )
    labels: str | None = option(
        group="inputs", metavar="FILE.csv", help="labels for a flat folder: rows filename,wnid or filename,index"
    )
    class_subset: str = option(
        "auto",
        group="inputs",
        metavar="auto|all|FILE",
        help="restrict the prediction to a subset of the 1,000 classes: auto (when --data holds exactly "
        "ImageNet-A's or ImageNet-R's 200 classes, as their protocols do), all (every output), or a file of "
        "WordNet ids; default {default}",
    )
    image_column: str = option(
        "image",
        group="inputs",
        metavar="NAME",
        help="Parquet shards: the column of image bytes, binary or a struct {bytes, path} (default {default})",
    )
    label_column: str = option(
        "label",
        group="inputs",
        metavar="NAME",
        help="Parquet shards: the column of class indices; -1 or null: unlabelled (default {default})",
    )
    limit: int | None = option(
        group="inputs", kind="positive_int", metavar="N", help="evaluate only the first N images (sorted order)"
    )
    trust_checkpoints: bool = option(
        False,
        group="inputs",
        help="allow checkpoints that need full unpickling (whole pickled modules); this can run code from the file",
    )
    ema: bool = option(
        False, group="inputs", help="use the EMA weights of files that hold both EMA and raw weights (default: raw)"
    )
    # protocol
    crops: str | None = option(  # None: "144" if the protocol has it, else its largest crop set
        group="protocol",
        metavar="SET",
        help="crop set to report: 1, 10 or 144 with the built-in ILSVRC 2014 protocol (default 144)",
    )
    table: bool = option(
        False,
        group="protocol",
        help="run the full crop grid once and report every crop set x {best member, all members}",
    )
    protocol: CropScheme = field(default_factory=CropScheme)  # --protocol NAME / --config (see build_config)
    views: str = option(
        "native",
        group="protocol",
        choices=VIEW_MODES,
        help="native (default): each member on its own eval view (resize, crop size, interpolation), the "
        "protocol scaled to it; protocol: every member on the protocol's views as written (docs/protocol.md)",
    )
    resize_backend: str = option(
        "tensor",
        group="protocol",
        choices=BACKENDS,
        help="tensor (default): torchvision's uint8 tensor resize; pil: PIL's, the pixels of PIL-based pipelines "
        "(torchvision's ImageFolder + weights.transforms(), timm's validate.py); slower (docs/speed.md)",
    )
    merge: str = option(
        DEFAULT_MERGE,
        group="protocol",
        choices=MERGES,
        help="how crops and members are combined (default {default}): " + describe_merges(),
    )
    compare_merges: bool = option(
        False, group="protocol", help="compute every merge mode in the same pass and compare them (merges.csv)"
    )
    # analysis
    real_labels: str | None = option(
        group="analysis", metavar="FILE.json", help="ImageNet-ReaL labels (real.json): adds ReaL error columns"
    )
    save_logits: bool = option(
        False,
        group="analysis",
        help="keep float16 per-member, per-crop-group statistics (logits.npz) for `ensemble-eval report`",
    )
    curve_samples: int = option(
        DEFAULT_CURVE_SAMPLES,
        group="analysis",
        kind="positive_int",
        metavar="N",
        help="ensemble-size curve: member subsets per size when there are more than N (default {default}, "
        "seeded sample)",
    )
    seed: int = option(
        DEFAULT_SEED,
        group="analysis",
        kind="count",
        metavar="N",
        help="seed of the curve's subset sample (default {default})",
    )
    # execution
    device: str = option(
        "auto", group="execution", choices=DEVICES, help="where models run (default {default}: cuda if present)"
    )
    batch_size: int | str = option(
        "auto",
        group="execution",
        kind="batch_size",
        metavar="N|auto",
        help="crops per forward pass; auto (default): the fastest size, timed on the first crops and cached "
        "per machine (docs/speed.md)",
    )
    workers: int = option(
        DEFAULT_WORKERS,
        group="execution",
        kind="workers",
        metavar="N",
        shown="min(8, CPU cores)",
        help="image decoding/cropping processes (default {default}; 0 = in the main process)",
    )
    precision: str = option(
        "fp32",
        group="execution",
        choices=PRECISIONS,
        help="forward passes in fp32 (default) or under bf16/fp16 autocast; softmax and averaging stay fp32",
    )
    compile: bool = option(
        False,
        group="execution",
        help="torch.compile each member for inference (slow first batches; pays off on long runs)",
    )
    channels_last: bool = option(
        True, group="execution", flag="--no-channels-last", help="run models in NCHW instead of channels_last"
    )
    resume: bool = option(False, group="execution", help="continue the unfinished run in --out (same settings)")
    strict: bool = option(False, group="execution", help="stop at the first undecodable image (default: skip it)")
    save_every: int = option(
        DEFAULT_SAVE_EVERY,
        group="execution",
        kind="positive_int",
        metavar="N",
        help="images per process between progress saves (default {default})",
    )
    save_interval: float = option(
        DEFAULT_SAVE_INTERVAL,
        group="execution",
        kind="positive_float",
        metavar="SECONDS",
        shown=int(DEFAULT_SAVE_INTERVAL),
        help="seconds between progress saves, whichever of the two comes first (default {default})",
    )
    # outputs
    out: str | None = option(
        group="outputs", metavar="DIR", help="run directory for the result files (default runs/<UTC time>)"
    )
    overwrite: bool = option(False, group="outputs", help="replace results already in --out")
    progress: bool = option(True, group="outputs", flag="--no-progress", help="no progress bar")
    verbose: bool = option(False, group="outputs", short="-v", help="debug logging")
    description: str | None = None  # a preset's one-line description (`--protocol list`)

    def table_title(self) -> str | None:
        """The paper and table the protocol reproduces: a preset's description up to its colon
        ("VGG 2014, Table 5"); GoogLeNet's Table 3 for the built-in protocol; None for one's own."""
        if self.description:
            return self.description.split(":", 1)[0].strip()
        return "Table 3" if self.protocol == CropScheme() else None

    def validate(self) -> None:
        """Check every value's type and range (each field's kind, from its definition above);
        resolve the default crop set."""
        for f in dataclasses.fields(self):
            if f.name != "protocol":
                _check_value(f, getattr(self, f.name))
        sets = self.protocol.crop_sets
        if self.crops is None:
            self.crops = "144" if "144" in sets else max(sets, key=lambda n: len(self.protocol.set_indices(n)))
        if self.crops not in sets:
            raise ConfigError(
                f"--crops {self.crops} is not a crop set of the protocol; choose one of "
                f"{list(sets)} or define it under protocol.crop_sets in a --config file"
            )

    @property
    def merges(self) -> tuple[str, ...]:
        """The merge modes to compute, the reported one first."""
        return (self.merge,) + tuple(m for m in MERGES if m != self.merge) if self.compare_merges else (self.merge,)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "protocol"}
        d["protocol"] = self.protocol.to_dict()
        return d


def _check_value(f: dataclasses.Field, value: Any) -> None:
    """ConfigError when `value` is not what field `f` takes (its type, kind or choices)."""
    kind, choices, name = f.metadata.get("kind"), f.metadata.get("choices"), f.name
    if kind == "workers":
        check_workers(value)
        return
    problem = None
    if f.type == "bool" and not isinstance(value, bool):
        problem = "must be true or false"
    elif f.type == "str | None" and value is not None and not isinstance(value, str):
        problem = "must be a string (a path or name)"
    elif f.type == "str" and choices is None and (not isinstance(value, str) or not value):
        problem = "must be a non-empty string (a name)"
    elif kind == "paths" and (not isinstance(value, list) or not all(isinstance(m, str) for m in value)):
        problem = "must be a list of paths or globs"
    elif kind == "batch_size" and value != "auto" and (type(value) is not int or value < 1):
        problem = "must be a positive integer or auto"
    elif kind == "positive_int" and value is not None and (type(value) is not int or value < 1):
        problem = "must be a positive integer"
    elif kind == "count" and (type(value) is not int or value < 0):
        problem = "must be an integer >= 0"
    elif kind == "positive_float" and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf
    ):
        problem = "must be a positive number of seconds"
    elif choices is not None and value not in choices:
        problem = f"must be one of {list(choices)}"
    if problem:
        raise ConfigError(f"{_option(name)} {problem}, got {short_repr(value)}")


def command_options() -> list[dataclasses.Field]:
    """The RunConfig fields that are command-line options, in --help order (by group)."""
    fields = [f for f in dataclasses.fields(RunConfig) if f.metadata.get("group")]
    return sorted(fields, key=lambda f: GROUPS.index(f.metadata["group"]))


RUN_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
FIELD_NAMES = set(RUN_FIELDS)


def max_workers() -> int:
    """The most loader processes a run may start: WORKERS_PER_CPU per usable CPU, at most MAX_WORKERS."""
    return min(MAX_WORKERS, WORKERS_PER_CPU * usable_cpus())


def check_workers(workers: object) -> int:
    """`workers` when it is an integer from 0 to max_workers(); ConfigError otherwise."""
    if type(workers) is not int or workers < 0:
        raise ConfigError(f"{_option('workers')} must be an integer >= 0, got {short_repr(workers)}")
    cap = max_workers()
    if workers > cap:
        cpus = usable_cpus()
        raise ConfigError(
            f"{_option('workers')} {short_repr(workers)} is more than the {cap} allowed on this machine "
            f"({WORKERS_PER_CPU} per usable CPU, {cpus} usable, never above {MAX_WORKERS}; each worker is a "
            f"process of its own); give --workers {cap} or fewer (the default here is {min(8, cpus)})"
        )
    return workers


def default_batch_size(device_type: str) -> int:
    """Crops per forward pass where `--batch-size auto` does not time (small runs, validate)."""
    return DEFAULT_BATCH_SIZE.get(device_type, DEFAULT_BATCH_SIZE["cpu"])


def _option(name: str) -> str:
    """How a setting is spelled in YAML and on the command line, for messages."""
    spec = RUN_FIELDS[name].metadata if name in RUN_FIELDS else {}
    return f"{name} ({spec.get('flag', '--' + name.replace('_', '-'))})"


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping of a --config file (see load_yaml_file); anything else is one ConfigError."""
    p = Path(path)
    fix = "pass --config FILE.yaml (the presets: `ensemble-eval --protocol list`)"
    data = load_yaml_file(p, "config file", MAX_CONFIG_BYTES, fix) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of option: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_yaml_file(path: Path, what: str, max_bytes: int, fix: str) -> Any:
    """The YAML document of a small file (a --config, a checkpoint's sidecar): a regular file (a
    FIFO would hang the reader) of at most `max_bytes` of UTF-8, nested at most MAX_YAML_DEPTH
    deep, of at most MAX_YAML_NODES nodes with its aliases expanded; anything else is one
    ConfigError naming `what` and `fix`."""
    text = read_text(path, max_bytes, what, fix, ConfigError)
    return _parse_yaml(text, f"{what} {path}")


class _YamlTooBig(Exception):
    """Raised inside the YAML loader: nested too deep, too many nodes, or an alias cycle."""


def _parse_yaml(text: str, where: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            self.depth += 1
            try:
                if self.depth > MAX_YAML_DEPTH:
                    line = self.peek_event().start_mark.line + 1
                    raise _YamlTooBig(f"nests deeper than {MAX_YAML_DEPTH} levels (line {line})")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    loader = None
    try:
        loader = Loader(text)  # reads the whole text: a NUL or other control character is a ReaderError here
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return loader.construct_document(node)
    except _YamlTooBig as exc:
        raise ConfigError(f"{where} {exc}; it should be a small mapping of options") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{where} is not valid YAML{at}; fix the syntax") from None
    except (RecursionError, MemoryError, ValueError) as exc:  # e.g. an integer of more than 4300 digits
        reason = first_line(exc).split(";")[0]
        raise ConfigError(f"{where} cannot be read as YAML ({reason}); fix the file") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_expanded_size(root) -> None:
    """_YamlTooBig when the node graph, each alias expanded where it is used, has more than
    MAX_YAML_NODES nodes, or refers to itself (`&a [*a]`). Iterative and memoized: linear in
    the nodes as written, whatever the expansion."""
    import yaml

    def children(node) -> list:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            open_nodes.discard(id(node))
            size[id(node)] = min(1 + sum(size[id(c)] for c in children(node)), MAX_YAML_NODES + 1)
            if size[id(node)] > MAX_YAML_NODES:
                raise _YamlTooBig(
                    f"expands to more than {MAX_YAML_NODES:,} values (its aliases repeat nodes many times over)"
                )
            continue
        if id(node) in size:
            continue
        if id(node) in open_nodes:
            raise _YamlTooBig(f"holds an alias that refers to itself (line {node.start_mark.line + 1})")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in size)


def build_config(yaml_path: str | None, overrides: dict[str, Any]) -> RunConfig:
    """defaults < preset < YAML < overrides (only the options the user actually gave).

    A preset is named by `protocol` in `overrides` (--protocol NAME) or by a `protocol:` string
    in the YAML file (the command line's wins); its file is read as the first layer."""
    from .presets import preset_path

    given = {k: v for k, v in overrides.items() if v is not None}
    preset = given.pop("protocol", None)
    from_file = read_yaml(yaml_path) if yaml_path else {}
    if isinstance(from_file.get("protocol"), str):
        named = from_file.pop("protocol")
        preset = preset or named
    values: dict[str, Any] = read_yaml(preset_path(preset)) if preset else {}
    if "protocol" in from_file:  # one's own scheme over the preset: not the preset's paper and table
        values.pop("description", None)
    values.update(from_file)
    values.update(given)
    unknown = sorted(set(values) - FIELD_NAMES)
    if unknown:
        raise ConfigError(f"unknown config option(s) {short_repr(unknown)}; known options: {sorted(FIELD_NAMES)}")
    protocol = values.pop("protocol", None)
    try:
        scheme = CropScheme() if protocol is None else CropScheme.from_dict(protocol)
    except SchemeError as exc:
        raise ConfigError(f"protocol in {yaml_path}: {exc}") from exc
    if isinstance(values.get("crops"), int):
        values["crops"] = str(values["crops"])  # `crops: 144` in YAML
    if isinstance(values.get("models"), str):
        values["models"] = [values["models"]]
    config = RunConfig(protocol=scheme, **values)
    config.validate()
    return config
