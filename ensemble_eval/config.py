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
MERGES = ("mean-prob", "mean-logit", "geo-mean", "max-crop")  # see merge.py; the first is the paper's


class ConfigError(UserError):
    """A configuration value or file that cannot be used."""


@dataclass
class RunConfig:
    """Everything one evaluation run needs to know."""

    models: list[str] = field(default_factory=list)
    data: str | None = None
    labels: str | None = None
    crops: str | None = None  # None: "144" if the protocol has it, else its largest crop set
    table: bool = False
    device: str = "auto"
    batch_size: int | str = "auto"  # crops per forward pass, or "auto": timed and cached (autobatch.py)
    workers: int = DEFAULT_WORKERS
    limit: int | None = None
    out: str | None = None  # None: runs/<UTC timestamp>
    overwrite: bool = False
    channels_last: bool = True
    compile: bool = False  # torch.compile every member for inference (--compile)
    progress: bool = True
    verbose: bool = False
    trust_checkpoints: bool = False  # allow full unpickling (whole modules): can run code
    ema: bool = False  # EMA weights of files holding both
    resume: bool = False  # continue the unfinished run in --out
    strict: bool = False  # stop at the first undecodable image instead of skipping it
    save_every: int = 32  # images per process between progress saves
    save_interval: float = 60.0  # seconds between progress saves (whichever comes first)
    precision: str = "fp32"  # forward passes in fp32, or under bf16/fp16 autocast (softmax stays fp32)
    views: str = "native"  # each member on its own eval view (the protocol scaled to it), or all on the protocol's
    resize_backend: str = "tensor"  # torchvision's uint8 tensor resize, or PIL's (the reference pipelines' pixels)
    merge: str = "mean-prob"  # how crops and members are combined (the paper: mean of softmax)
    compare_merges: bool = False  # also compute every other merge mode in the same pass
    save_logits: bool = False  # keep float16 per-member, per-crop-group statistics (logits.npz)
    real_labels: str | None = None  # ImageNet-ReaL real.json: an extra error column
    curve_samples: int = 64  # member subsets per ensemble size k, when there are more (seeded sample)
    seed: int = 0  # seed of that sample
    protocol: CropScheme = field(default_factory=CropScheme)
    description: str | None = None  # a preset's one-line description (`--protocol list`)

    def table_title(self) -> str | None:
        """The paper and table the protocol reproduces: a preset's description up to its colon
        ("VGG 2014, Table 5"); GoogLeNet's Table 3 for the built-in protocol; None for one's own."""
        if self.description:
            return self.description.split(":", 1)[0].strip()
        return "Table 3" if self.protocol == CropScheme() else None

    def validate(self) -> None:
        """Check every value's type and range; resolve the default crop set."""
        for name in (
            "table",
            "overwrite",
            "channels_last",
            "compile",
            "progress",
            "verbose",
            "trust_checkpoints",
            "ema",
            "resume",
            "strict",
            "compare_merges",
            "save_logits",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{_option(name)} must be true or false, got {short_repr(getattr(self, name))}")
        for name in ("data", "labels", "out", "crops", "real_labels", "description"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{_option(name)} must be a string (a path or name), got {short_repr(value)}")
        if not isinstance(self.models, list) or not all(isinstance(m, str) for m in self.models):
            raise ConfigError(f"{_option('models')} must be a list of paths or globs, got {short_repr(self.models)}")
        if self.batch_size != "auto" and (type(self.batch_size) is not int or self.batch_size < 1):
            raise ConfigError(
                f"{_option('batch_size')} must be a positive integer or auto, got {short_repr(self.batch_size)}"
            )
        for name in ("limit", "save_every", "curve_samples"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ConfigError(f"{_option(name)} must be a positive integer, got {short_repr(value)}")
        value = self.save_interval
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ConfigError(
                f"{_option('save_interval')} must be a positive number of seconds, got {short_repr(value)}"
            )
        check_workers(self.workers)
        if type(self.seed) is not int or self.seed < 0:
            raise ConfigError(f"{_option('seed')} must be an integer >= 0, got {short_repr(self.seed)}")
        if self.merge not in MERGES:
            raise ConfigError(f"{_option('merge')} must be one of {list(MERGES)}, got {short_repr(self.merge)}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"{_option('precision')} must be fp32, bf16 or fp16, got {short_repr(self.precision)}")
        for name, allowed in (("views", VIEW_MODES), ("resize_backend", BACKENDS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{_option(name)} must be one of {list(allowed)}, got {short_repr(getattr(self, name))}"
                )
        if self.device not in DEVICES:
            raise ConfigError(f"{_option('device')} must be one of {list(DEVICES)}, got {short_repr(self.device)}")
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


FIELD_NAMES = {f.name for f in dataclasses.fields(RunConfig)}


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
    flags = {"channels_last": "--no-channels-last", "progress": "--no-progress"}
    return f"{name} ({flags.get(name, '--' + name.replace('_', '-'))})"


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
