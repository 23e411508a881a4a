"""Speed, measured side by side in one run: the machine's ceiling, the models alone, the tool
end to end, and the naive way most evaluation scripts do it.

Every figure is the median of repeated timings after a warm-up. `run_benchmark` returns one
JSON-ready record, so two machines or two versions can be compared file to file.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from .checkpoints import Convention, Member
from .crops import CropScheme
from .engine import evaluate
from .ensemble import Plan, place_members
from .models import ArchSpec

TARGETS = {"e2e_over_model": 0.9, "e2e_over_naive": 2.0, "model_over_ceiling": 0.55}


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN/cuDNN primitive selection
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def pure_model(
    members: list[Member], device: torch.device, batch_size: int, crop_size: int, channels_last: bool, repeats: int
) -> float:
    """Crop evaluations per second (crops x members) of the members alone, on ready-made crops."""
    runners = place_members(members, device, channels_last)
    x = torch.rand(batch_size, 3, crop_size, crop_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def step():
        for r in runners:
            torch.softmax(r.logits(x).float(), dim=1)

    return batch_size * len(members) / _median_time(step, repeats)


def end_to_end(
    samples,
    members,
    scheme: CropScheme,
    crop_set: str,
    device,
    batch_size: int,
    workers: int,
    channels_last: bool,
    repeats: int,
) -> float:
    """Crop evaluations per second of the tool's own evaluation loop (decode to counts)."""
    plan = Plan.make(scheme, [crop_set], crop_set, batch_size)
    evaluate(samples[:1], members, scheme, [crop_set], crop_set, device, batch_size, 0, channels_last, False)
    seconds = []
    for _ in range(repeats):
        result = evaluate(
            samples,
            members,
            scheme,
            [crop_set],
            crop_set,
            device,
            batch_size,
            workers,
            channels_last,
            False,
            strict=False,
        )
        seconds.append(result.seconds)
    return len(samples) * plan.crops_per_image * len(members) / statistics.median(seconds)


def view_pixels(samples, scheme: CropScheme, crop_set: str, unit: int = 224) -> float:
    """Mean pixels per image that crop set `crop_set` feeds each member, in `unit` x `unit` crops."""
    from PIL import Image

    from .crops import plan_crops

    total = 0
    for sample in samples:
        with Image.open(sample.path) as img:
            width, height = img.size
        total += sum(b.size[0] * b.size[1] for b in plan_crops(height, width, scheme, scheme.set_indices(crop_set)))
    return total / len(samples) / unit**2


def per_image_seconds(
    samples,
    members,
    scheme: CropScheme,
    crop_set: str,
    device,
    batch_size: int,
    workers: int,
    channels_last: bool = True,
    repeats: int = 2,
) -> float:
    """Steady-state seconds per image of the tool's evaluation loop for one crop set: the
    difference of a run over all `samples` and one over the first half, so start-up (loader
    workers, first forward passes) cancels; each the fastest of `repeats` runs."""
    half = max(1, len(samples) // 2)

    def seconds(subset) -> float:
        start = time.perf_counter()
        evaluate(subset, members, scheme, [crop_set], crop_set, device, batch_size, workers, channels_last, False)
        _sync()
        return time.perf_counter() - start

    seconds(samples[:1])  # warm-up
    full = min(seconds(samples) for _ in range(repeats))  # the least disturbed of `repeats` runs
    part = min(seconds(samples[:half]) for _ in range(repeats))
    return (full - part) / (len(samples) - half)


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
        secs = per_image_seconds(samples[:n], members, scheme, crop_set, device, batch_size, workers)
        rows.append(
            {
                "protocol": name,
                "crop_set": crop_set,
                "views": len(scheme.set_indices(crop_set)),
                "crops_224_equivalent": pixels,
                "images": n,
                "seconds_per_image": secs,
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

    from .crops import plan_crops

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
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_benchmark(
    samples,
    members,
    scheme: CropScheme,
    crop_set: str,
    device: torch.device,
    batch_size: int,
    workers: int,
    channels_last: bool = True,
    repeats: int = 3,
    naive_repeats: int = 1,
    measure_startup: bool = True,
) -> dict:
    """All measurements and their ratios, as one record (see the module docstring)."""
    ceiling = {"fp32": matmul_ceiling(device, torch.float32, repeats=repeats)}
    if device.type == "cuda":
        ceiling["bf16"] = matmul_ceiling(device, torch.bfloat16, repeats=repeats)
    flops = flops_per_crop(members[0].model.to(device), scheme.crop_size)
    model_rate = pure_model(members, device, batch_size, scheme.crop_size, channels_last, repeats)
    e2e_rate = end_to_end(samples, members, scheme, crop_set, device, batch_size, workers, channels_last, repeats)
    naive_rate = naive(samples, members, scheme, crop_set, device, naive_repeats)
    record = {
        "machine": machine_info(device),
        "settings": {
            "images": len(samples),
            "models": len(members),
            "crops": crop_set,
            "crops_per_image": len(scheme.set_indices(crop_set)),
            "crop_size": scheme.crop_size,
            "batch_size": batch_size,
            "workers": workers,
            "channels_last": channels_last,
            "repeats": repeats,
        },
        "ceiling_gflops": ceiling,
        "model": {"crops_per_s": model_rate, "gflops": model_rate * flops / 1e9, "gflop_per_crop": flops / 1e9},
        "end_to_end": {"crops_per_s": e2e_rate, "gflops": e2e_rate * flops / 1e9},
        "naive": {"crops_per_s": naive_rate},
    }
    if crop_set == "1" or len(scheme.set_indices(crop_set)) == 1:
        ref = reference_one_crop(samples, members, device, batch_size, workers, repeats)
        record["reference_1crop"] = {"crops_per_s": ref}
    ratios = {
        "e2e_over_model": e2e_rate / model_rate,
        "e2e_over_naive": e2e_rate / naive_rate,
        "model_over_ceiling": record["model"]["gflops"] / ceiling["fp32"],
    }
    if "reference_1crop" in record:
        ratios["e2e_over_reference_1crop"] = e2e_rate / record["reference_1crop"]["crops_per_s"]
    record["ratios"] = ratios
    # The targets: multi-crop runs against the model alone and the naive way; a
    # 1-crop run against the torchvision reference-style evaluation; the model against the
    # hardware in both cases.
    wanted = {"model_over_ceiling": TARGETS["model_over_ceiling"]}
    if "e2e_over_reference_1crop" in ratios:
        wanted["e2e_over_reference_1crop"] = 1.0
    else:
        wanted.update({k: TARGETS[k] for k in ("e2e_over_model", "e2e_over_naive")})
    record["targets"] = {k: {"target": v, "met": ratios[k] >= v} for k, v in wanted.items()}
    if measure_startup:
        record["startup"] = startup(samples, members, repeats)
    return record
