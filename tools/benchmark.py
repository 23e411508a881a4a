"""Speed, measured side by side in one run: the machine's ceiling, the models alone at every
candidate batch size, the tool end to end in steady state, and the naive way most evaluation
scripts do it.

The models alone and the tool each count their least disturbed timing after a warm-up (a
shared machine only ever slows a run down); the tool's is the difference of two run lengths,
so start-up cancels (start-up is timed on its own, in fresh processes). The ceiling and the
naive baseline are medians. `run_benchmark` returns one JSON-ready record, so two machines or
two versions can be compared file to file.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ensemble_eval.crops import CropScheme
from ensemble_eval.engine import evaluate
from ensemble_eval.ensemble import Plan, forward, place_members
from ensemble_eval.execution import Execution
from ensemble_eval.members.convention import Convention
from ensemble_eval.members.inspection import Member
from ensemble_eval.models import ArchSpec
from ensemble_eval.views import Geometries

FULL_PROTOCOL_CROPS = 7 * 144 * 50_000  # the paper's evaluation: 7 members x 144 crops x ImageNet val
TARGETS = {"e2e_over_model": 0.92, "e2e_over_naive": 2.2, "model_over_ceiling": 0.55}


@dataclass(frozen=True)
class Setting:
    """One evaluation to time: the images, the ensemble, the crop set, and the tool's settings."""

    samples: list
    members: list[Member]
    scheme: CropScheme
    crop_set: str
    device: torch.device
    batch_size: int | str = "auto"  # crops per forward pass; "auto" only where run_benchmark chooses
    workers: int = 0
    channels_last: bool = True
    precision: str = "fp32"
    compile: bool = False
    backend: str = "tensor"  # the resize backend (tensor or pil)

    def but(self, **changes) -> Setting:
        return dataclasses.replace(self, **changes)

    def plan(self) -> Plan:
        """What the tool computes for this setting: its one crop set, every member on the scheme."""
        geometries = Geometries.single(self.scheme, len(self.members), self.backend)
        return Plan.make(
            self.scheme,
            [self.crop_set],
            self.crop_set,
            self.batch_size,
            precision=self.precision,
            num_members=len(self.members),
            geometries=geometries,
        )

    def execution(self, **changes) -> Execution:
        """How the tool runs it (no progress bar; an undecodable image stops it)."""
        options = {"workers": self.workers, "channels_last": self.channels_last, "compile": self.compile}
        return Execution(self.device, strict=True, **(options | changes))


def _median_time(fn, repeats: int, pick=statistics.median) -> float:
    fn()  # warm-up: allocator, oneDNN/cuDNN primitive selection
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return pick(times)


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def matmul_ceiling(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matrix multiply: what the hardware gives a well-tuned kernel."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = _median_time(lambda: a @ b, repeats)
    return 2 * n**3 / seconds / 1e9


def flops_per_crop(model: torch.nn.Module, crop_size: int) -> float:
    """FLOPs of one crop's forward pass, counted by PyTorch's own flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, crop_size, crop_size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return float(counter.get_total_flops())


def pure_model(setting: Setting, batch_size: int, repeats: int, best: bool = False) -> float:
    """Crop evaluations per second (crops x members) of the members alone, on ready-made crops
    (the median step; `best`: the fastest), eager, under the setting's precision's autocast."""
    runners = place_members(setting.members, setting.device, setting.channels_last)
    size = setting.scheme.crop_size
    x = torch.rand(batch_size, 3, size, size, device=setting.device)
    if setting.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def step():
        for r in runners:
            torch.softmax(forward(r, x, setting.precision), dim=1)

    return batch_size * len(setting.members) / _median_time(step, repeats, min if best else statistics.median)


def model_batches(setting: Setting, candidates, repeats: int) -> dict[int, float]:
    """The members alone at every candidate batch size: {batch: crops/s (crops x members)},
    each the best of `repeats` timed steps (the least disturbed, as for the tool)."""
    return {b: pure_model(setting, b, repeats, best=True) for b in candidates}


def view_pixels(samples, scheme: CropScheme, crop_set: str, unit: int = 224) -> float:
    """Mean pixels per image that crop set `crop_set` feeds each member, in `unit` x `unit` crops."""
    from PIL import Image

    from ensemble_eval.crops import plan_crops

    total = 0
    for sample in samples:
        with Image.open(sample.path) as img:
            width, height = img.size
        total += sum(b.size[0] * b.size[1] for b in plan_crops(height, width, scheme, scheme.set_indices(crop_set)))
    return total / len(samples) / unit**2


def _evaluate(setting: Setting, samples=None):
    """The tool's in-memory evaluation of `setting` (over `samples` when given), no progress bar."""
    return evaluate(
        setting.samples if samples is None else samples, setting.members, setting.plan(), setting.execution()
    )


def per_image_seconds(setting: Setting, repeats: int = 2) -> float:
    """Steady-state seconds per image of the tool's evaluation loop for the setting's crop set:
    the difference of a run over all its samples and one over the first half, so start-up
    (loader workers, first forward passes; with `compile`, compiling) cancels; each the fastest
    of `repeats` runs. The setting's batch size must be a number."""
    samples = setting.samples
    half = max(1, len(samples) // 2)

    def seconds(subset) -> float:
        start = time.perf_counter()
        _evaluate(setting, subset)
        _sync()
        return time.perf_counter() - start

    seconds(samples[:1])  # warm-up
    full = min(seconds(samples) for _ in range(repeats))  # the least disturbed of `repeats` runs
    part = min(seconds(samples[:half]) for _ in range(repeats))
    steady = (full - part) / (len(samples) - half)
    if steady > 0:
        return steady
    # a busy machine's noise outweighed the difference (a few images): the whole run's seconds
    # per image instead, start-up included, an upper bound rather than a negative rate
    return full / len(samples)


def extraction_seconds(samples, scheme: CropScheme, crop_set: str, backend: str, repeats: int = 3) -> float:
    """Seconds per image of a loader worker's work (read, decode, resize, crop, flip) with the
    resize `backend`, in this process: the fastest of `repeats` passes over `samples`."""
    from ensemble_eval.data import CropDataset

    dataset = CropDataset(samples, scheme, scheme.set_indices(crop_set), backend)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        best = min(best, time.perf_counter() - start)
    return best / len(samples)


def resize_backends(setting: Setting, repeats: int = 3) -> dict:
    """The cost of `--resize-backend pil` against the tensor resize, side by side: a loader
    worker's seconds per image (in one process, interleaved passes) and the tool's steady
    state end to end (with the setting's loader processes)."""
    samples, scheme, crop_set = setting.samples, setting.scheme, setting.crop_set
    extract: dict[str, float] = {"tensor": math.inf, "pil": math.inf}
    for _ in range(repeats):  # interleaved, each backend keeping its least disturbed pass
        for backend in extract:
            extract[backend] = min(extract[backend], extraction_seconds(samples, scheme, crop_set, backend, 1))
    e2e = {
        backend: per_image_seconds(
            setting.but(channels_last=True, precision="fp32", compile=False, backend=backend),
            repeats=max(2, repeats - 1),
        )
        for backend in extract
    }
    return {
        "crops": crop_set,
        "extract_seconds_per_image": extract,
        "end_to_end_seconds_per_image": e2e,
        "pil_over_tensor_extract": extract["pil"] / extract["tensor"],
        "pil_over_tensor_end_to_end": e2e["pil"] / e2e["tensor"],
    }


def write_shards(samples, folder: Path, per_shard: int = 32, row_group_size: int = 8) -> dict[str, Path]:
    """The samples' image files, in their order, as Parquet shards (Hugging Face's layout: a struct
    image column {bytes, path}, an int64 label) and as WebDataset tar shards (KEY.jpg + KEY.cls),
    `per_shard` images a shard: {"parquet": folder, "tar": folder}."""
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {"parquet": folder / "parquet", "tar": folder / "tar"}
    for path in out.values():
        path.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for n, start in enumerate(range(0, len(samples), per_shard)):
        part = samples[start : start + per_shard]
        blobs = [Path(s.path).read_bytes() for s in part]
        images = pa.array([{"bytes": b, "path": Path(s.path).name} for b, s in zip(blobs, part)], image_type)
        table = pa.table({"image": images, "label": pa.array([s.target for s in part], pa.int64())})
        pq.write_table(table, out["parquet"] / f"val-{n:05d}.parquet", row_group_size=row_group_size)
        with tarfile.open(out["tar"] / f"val-{n:05d}.tar", "w") as tar:
            for i, (blob, s) in enumerate(zip(blobs, part)):
                for name, data in ((f"{start + i:08d}.jpg", blob), (f"{start + i:08d}.cls", str(s.target).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return out


def loader_throughput(samples, scheme: CropScheme, crop_set: str, workers: int, repeats: int = 3) -> dict:
    """Images per second through the crop loader (read, decode, resize, crop, flip; no model) of
    the same images as loose files, as Parquet shards and as tar shards (`write_shards`, in a
    temporary folder), in one run: interleaved passes (each source first in turn), the fastest of
    each. Batches of one image, as a 144-crop run on a CPU has them. The steady-state rate is the
    difference of a pass over all the images and one over the first half, so the loader
    processes' start cancels (the whole pass's rate where noise makes the difference meaningless)."""
    import tempfile

    from ensemble_eval import shards
    from ensemble_eval.data import crop_loader
    from ensemble_eval.listing import list_samples, read_sample

    indices = scheme.set_indices(crop_set)

    def one_pass(source) -> float:
        start = time.perf_counter()
        done = 0
        for batch in crop_loader(source, scheme, indices, [[i] for i in range(len(source))], workers):
            done += len(batch.indices)
            assert not batch.failures, batch.failures
        assert done == len(source)
        return time.perf_counter() - start

    n, half = len(samples), len(samples) // 2
    with tempfile.TemporaryDirectory(prefix="ensemble-eval-shards-") as tmp:
        folders = write_shards(samples, Path(tmp))
        sources = {"folder": samples, **{kind: list_samples(path) for kind, path in folders.items()}}
        assert all([s.target for s in got] == [s.target for s in samples] for got in sources.values())
        full = {name: math.inf for name in sources}
        part = {name: math.inf for name in sources}
        names = list(sources)
        for r in range(repeats):
            for name in names[r % 3 :] + names[: r % 3]:  # each source first in turn: no order favours one
                source = sources[name]
                full[name] = min(full[name], one_pass(source))
                if half:
                    part[name] = min(part[name], one_pass(source[:half]))
        reads = {name: math.inf for name in sources}  # the read alone: bytes of each image, no decoding
        for _ in range(repeats):
            for name, source in sources.items():
                shards._row_groups.clear()  # Parquet: every row group read afresh, as a new process does
                start = time.perf_counter()
                for sample in source:
                    read_sample(sample)
                reads[name] = min(reads[name], (time.perf_counter() - start) / n)
    rates = {}
    for name in sources:
        steady = full[name] - part[name]
        rates[name] = (n - half) / steady if half and steady > 0 else n / full[name]
    return {
        "images": n,
        "crops": crop_set,
        "crops_per_image": len(indices),
        "workers": workers,
        "images_per_s": rates,
        "whole_pass_images_per_s": {name: n / seconds for name, seconds in full.items()},
        "read_ms_per_image": {name: seconds * 1000 for name, seconds in reads.items()},
        "parquet_over_folder": rates["parquet"] / rates["folder"],
        "tar_over_folder": rates["tar"] / rates["folder"],
    }


def protocol_costs(samples, members, protocols, device, batch_size: int, workers: int, images: int) -> list[dict]:
    """Per (name, scheme, crop set): views per image, pixels fed per image (in 224 x 224 crops),
    steady-state seconds per image, and that time relative to the first entry's.

    Sets as costly as 144 crops or more are timed on `images` images; cheaper ones on
    proportionally more (at most all of `samples`), so that each difference of two run
    lengths spans seconds, not noise."""
    rows = []
    for name, scheme, crop_set in protocols:
        pixels = view_pixels(samples[:images], scheme, crop_set)
        n = min(len(samples), max(images, math.ceil(images * 144 / pixels)))
        setting = Setting(samples[:n], members, scheme, crop_set, device, batch_size, workers)
        rows.append(
            {
                "protocol": name,
                "crop_set": crop_set,
                "views": len(scheme.set_indices(crop_set)),
                "crops_224_equivalent": pixels,
                "images": n,
                "seconds_per_image": per_image_seconds(setting),
            }
        )
    for row in rows:
        row["cost_vs_first"] = row["seconds_per_image"] / rows[0]["seconds_per_image"]
    return rows


def naive(samples, members, scheme: CropScheme, crop_set: str, device, repeats: int) -> float:
    """Crop evaluations per second the common way: per crop, PIL decode and torchvision
    transforms, NCHW float32, batch of one, one model after another."""
    from PIL import Image
    from torchvision import transforms as T
    from torchvision.transforms import functional as F

    from ensemble_eval.crops import plan_crops

    indices = scheme.set_indices(crop_set)
    models = [(m.model.to(device).to(memory_format=torch.contiguous_format), m.mean, m.std) for m in members]

    def crop_of(path, box):
        img = Image.open(path).convert("RGB")
        img = T.Resize(box.key.scale)(img)
        img = F.crop(img, *box.region)
        img = F.crop(img, *box.crop)
        if box.key.crop == "full":
            img = T.Resize(box.size)(img)
        return F.hflip(img) if box.mirror else img

    @torch.inference_mode()
    def run():
        for sample in samples:
            with Image.open(sample.path) as img:
                width, height = img.size
            boxes = plan_crops(height, width, scheme, indices)
            for model, mean, std in models:
                total = 0
                for box in boxes:
                    x = T.Normalize(mean, std)(T.ToTensor()(crop_of(sample.path, box)))[None].to(device)
                    total = total + torch.softmax(model(x), dim=1)

    seconds = _median_time(run, repeats) if repeats > 1 else _time_once(run)
    return len(samples) * len(indices) * len(members) / seconds


def _time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def reference_one_crop(samples, members, device, batch_size: int, workers: int, repeats: int) -> float:
    """Crop evaluations per second of a torchvision-reference-style 1-crop evaluation:
    an ImageFolder-like dataset with the standard eval preset (PIL), a DataLoader, NCHW."""
    from PIL import Image
    from torchvision import transforms as T

    preset = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(members[0].mean, members[0].std)])

    class Folder(torch.utils.data.Dataset):
        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            return preset(Image.open(samples[i].path).convert("RGB")), samples[i].target

    models = [m.model.to(device).to(memory_format=torch.contiguous_format) for m in members]

    @torch.inference_mode()
    def run():
        loader = torch.utils.data.DataLoader(Folder(), batch_size=batch_size, num_workers=workers)
        for x, _ in loader:
            for model in models:
                torch.softmax(model(x.to(device)), dim=1)

    return len(samples) * len(members) / _median_time(run, repeats)


def random_members(count: int, num_classes: int = 1000) -> list[Member]:
    """Untrained torchvision GoogLeNets: speed does not depend on the weights."""
    from torchvision.models import GoogLeNet

    members = []
    for i in range(count):
        torch.manual_seed(i)
        model = GoogLeNet(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=False).eval()
        members.append(
            Member(f"random_{i}", "", ArchSpec("torchvision-googlenet", num_classes, False), model, Convention())
        )
    return members


STARTUP_TARGETS = {"help_s": 0.3, "run_over_import_s": 1.0}  # seconds, at most


def startup(samples, members, repeats: int) -> dict:
    """Start-up in seconds, each the median of `repeats` fresh processes: `import torch,
    torchvision` alone, `ensemble-eval --help`, and a 1-image, 1-crop run of the first member
    (saved as a state dict); and the run's excess over the import."""
    import subprocess
    import sys
    import tempfile

    sample = samples[0]
    root = str(sample.path)[: -len(sample.rel_path)]

    def median_seconds(args: list[str], cwd: str) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], cwd=cwd, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    with tempfile.TemporaryDirectory() as tmp:  # a neutral directory: the installed package runs
        ckpt = str(Path(tmp) / "member.pt")
        torch.save(members[0].model.state_dict(), ckpt)
        run = ["-m", "ensemble_eval", "--models", ckpt, "--data", root, "--limit", "1", "--crops", "1"]
        run += ["--out", str(Path(tmp) / "run"), "--no-progress", "--device", "cpu"]
        record = {
            "import_torch_torchvision_s": median_seconds(["-c", "import torch, torchvision"], tmp),
            "help_s": median_seconds(["-m", "ensemble_eval", "--help"], tmp),
            "one_image_one_crop_run_s": median_seconds([*run, "--overwrite"], tmp),
        }
    record["run_over_import_s"] = record["one_image_one_crop_run_s"] - record["import_torch_torchvision_s"]
    record["targets"] = {k: {"at_most": v, "met": record[k] <= v} for k, v in STARTUP_TARGETS.items()}
    return record


def machine_info(device: torch.device) -> dict:
    """The benchmark's record of the machine: environment.environment's facts, flattened."""
    from ensemble_eval.environment import environment

    env = environment(device)
    info = {k: env[k] for k in ("cpu", "cpu_cores", "torch_threads", "python", "device")}
    info["torch"] = env["packages"]["torch"]
    if env["gpu"]:
        info["gpu"] = env["gpu"]
    return info


def _models_alone(setting: Setting, repeats: int) -> dict:
    """The members alone at every candidate batch size of `--batch-size auto`, counted at their best."""
    from ensemble_eval.autobatch import CANDIDATES

    flops = flops_per_crop(setting.members[0].model.to(setting.device), setting.scheme.crop_size)
    candidates = CANDIDATES.get(setting.device.type, CANDIDATES["cpu"])
    batches = model_batches(setting, candidates, repeats)
    best = max(batches, key=batches.get)
    return {
        "batches": {str(b): r for b, r in batches.items()},
        "best_batch": best,
        "crops_per_s": batches[best],
        "gflops": batches[best] * flops / 1e9,
        "gflop_per_crop": flops / 1e9,
    }


def _end_to_end(setting: Setting, repeats: int) -> dict:
    """The tool at the setting's batch size ("auto": its own choice, timed afresh with the cache
    unused), in steady state: the difference of two run lengths, so start-up cancels."""
    from ensemble_eval.autobatch import Workload, choose
    from ensemble_eval.config import default_batch_size

    s = setting
    indices = s.scheme.set_indices(s.crop_set)
    work = Workload(s.scheme, indices, s.device, s.channels_last, s.precision)
    choice = choose(
        s.batch_size, s.members, s.samples, work, default_batch_size(s.device.type), min_timed_run=0, use_cache=False
    )
    secs = per_image_seconds(s.but(batch_size=choice.batch_size), max(2, repeats - 1))
    rate = len(indices) * len(s.members) / secs
    return {"seconds_per_image": secs, "crops_per_s": rate, "batch_size": choice.batch_size, "choice": choice.to_dict()}


def _settings_record(setting: Setting, repeats: int) -> dict:
    s = setting
    return {
        "images": len(s.samples),
        "models": len(s.members),
        "crops": s.crop_set,
        "crops_per_image": len(s.scheme.set_indices(s.crop_set)),
        "crop_size": s.scheme.crop_size,
        "batch_size": s.batch_size,
        "workers": s.workers,
        "channels_last": s.channels_last,
        "precision": s.precision,
        "compile": s.compile,
        "repeats": repeats,
    }


def _ratios_and_targets(record: dict) -> None:
    """The record's ratios, and the issue's targets: multi-crop runs against the models alone at
    their best batch and the naive way; a 1-crop run against the torchvision reference-style
    evaluation; the models against the hardware in both cases."""
    e2e_rate = record["end_to_end"]["crops_per_s"]
    ratios = {
        "e2e_over_model": e2e_rate / record["model"]["crops_per_s"],
        "e2e_over_naive": e2e_rate / record["naive"]["crops_per_s"],
        "model_over_ceiling": record["model"]["gflops"] / record["ceiling_gflops"]["fp32"],
    }
    if "reference_1crop" in record:
        ratios["e2e_over_reference_1crop"] = e2e_rate / record["reference_1crop"]["crops_per_s"]
    record["ratios"] = ratios
    wanted = {"model_over_ceiling": TARGETS["model_over_ceiling"]}
    if "e2e_over_reference_1crop" in ratios:
        wanted["e2e_over_reference_1crop"] = 1.0
    else:
        wanted.update({k: TARGETS[k] for k in ("e2e_over_model", "e2e_over_naive")})
    record["targets"] = {k: {"target": v, "met": ratios[k] >= v} for k, v in wanted.items()}


def run_benchmark(setting: Setting, repeats: int = 3, naive_repeats: int = 1) -> dict:
    """All measurements and their ratios for one ensemble, as one record (see the module docstring).

    The members alone run at every candidate batch size of `--batch-size auto` and count at
    their best; the tool runs at the setting's batch size, where "auto" is its own choice, timed
    afresh (autobatch.choose, cache unused). The precision applies to both, `compile` to the
    tool (the models alone run eager). The projection is the paper's full protocol
    (FULL_PROTOCOL_CROPS forward passes) at the tool's rate."""
    from ensemble_eval.config import default_batch_size

    s = setting
    ceiling = {"fp32": matmul_ceiling(s.device, torch.float32, repeats=repeats)}
    if s.device.type == "cuda":
        ceiling["bf16"] = matmul_ceiling(s.device, torch.bfloat16, repeats=repeats)
    model = _models_alone(s, repeats)
    tool = _end_to_end(s, repeats)
    tool["gflops"] = tool["crops_per_s"] * model["gflop_per_crop"]
    record = {
        "machine": machine_info(s.device),
        "settings": _settings_record(s, repeats),
        "ceiling_gflops": ceiling,
        "model": model,
        "end_to_end": tool,
        "naive": {"crops_per_s": naive(s.samples, s.members, s.scheme, s.crop_set, s.device, naive_repeats)},
    }
    record["projection"] = {  # crops x members per second: one member's crops/s, as if it ran alone
        "full_protocol_forward_passes": FULL_PROTOCOL_CROPS,
        "full_protocol_hours": FULL_PROTOCOL_CROPS / tool["crops_per_s"] / 3600,
    }
    if len(s.scheme.set_indices(s.crop_set)) == 1:
        ref = reference_one_crop(s.samples, s.members, s.device, default_batch_size(s.device.type), s.workers, repeats)
        record["reference_1crop"] = {"crops_per_s": ref}
    _ratios_and_targets(record)
    return record


def precision_agreement(setting: Setting, sets: dict[str, int], precisions=("bf16", "fp16")) -> list[dict]:
    """How far bf16/fp16 autocast moves the ensemble's averaged probabilities from fp32.

    sets: {crop set: number of images (the first of the setting's) to evaluate it on}; the
    setting's own crop set and precision are not used. Per precision and set: the largest
    absolute difference of any averaged probability, the images whose top-1 class or top-5 set
    of classes changed, both precisions' top-1/top-5 errors, and the seconds each took on this
    device."""
    rows = []
    for crop_set, n in sets.items():
        at = setting.but(samples=setting.samples[:n], crop_set=crop_set)
        base, base_s = _timed_evaluation(at.but(precision="fp32"))
        ref = torch.from_numpy(base.probs)
        ref_top5 = ref.topk(5, dim=1).indices.sort(dim=1).values
        for precision in precisions:
            result, secs = _timed_evaluation(at.but(precision=precision))
            probs = torch.from_numpy(result.probs)
            top5 = probs.topk(5, dim=1).indices.sort(dim=1).values
            errors = base.tally.ensemble[crop_set], result.tally.ensemble[crop_set]
            rows.append(
                {
                    "precision": precision,
                    "crop_set": crop_set,
                    "images": len(at.samples),
                    "max_abs_diff": float((probs - ref).abs().max()),
                    "top1_changed": int((probs.argmax(1) != ref.argmax(1)).sum()),
                    "top5_changed": int((top5 != ref_top5).any(dim=1).sum()),
                    "top1_err": {"fp32": errors[0].top1_err, precision: errors[1].top1_err},
                    "top5_err": {"fp32": errors[0].top5_err, precision: errors[1].top5_err},
                    "seconds": {"fp32": base_s, precision: secs},
                }
            )
    return rows


def _timed_evaluation(setting: Setting):
    """The tool's evaluation of `setting` (on the scheme as it is, channels-last) and its seconds."""
    start = time.perf_counter()
    plan = setting.but(backend="tensor").plan()
    result = evaluate(setting.samples, setting.members, plan, setting.execution(channels_last=True, compile=False))
    return result, time.perf_counter() - start
