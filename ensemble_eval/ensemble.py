"""Running the members over crop batches and averaging softmax outputs on the device.

Each chunk of crops is converted to float once and reused by every member, each applying
its own mean/std. Softmax is taken per member per crop in float32 and summed per image
over every requested crop set (crop sets are nested subsets of one crop grid, so one pass
serves 1, 10 and 144 crops alike). The ensemble's prediction for a set is the mean over its
crops and over all members.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .checkpoints import Member
from .crops import CropScheme
from .data import DataError, Sample, crop_loader
from .metrics import Tally, topk_hits

log = logging.getLogger(__name__)


@dataclass
class Runner:
    """A member placed on the device with its input convention as tensors.

    Crops arrive as 0-1 RGB floats [N, 3, S, S]; `prepare` applies the member's channel
    order, scale and mean/std; `outputs` drops leading background outputs and reorders
    the rest into the canonical class order.
    """

    model: nn.Module
    mean: torch.Tensor  # float32 [1, 3, 1, 1], in the member's input scale divided by that scale
    std: torch.Tensor  # float32 [1, 3, 1, 1], likewise
    bgr: bool
    class_offset: int
    order: torch.Tensor | None  # int64 [C]: canonical class i is output order[i]

    def logits(self, x01: torch.Tensor) -> torch.Tensor:
        x = x01[:, [2, 1, 0]] if self.bgr else x01
        logits = self.model((x - self.mean) / self.std)
        if self.class_offset:
            logits = logits[:, self.class_offset :]
        if self.order is not None:
            logits = logits[:, self.order]
        return logits


def place_members(members: list[Member], device: torch.device, channels_last: bool) -> list[Runner]:
    from .data import wnid_to_index

    runners = []
    for m in members:
        model = m.model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.eval()
        conv = m.convention
        # (x * scale - mean) / std == (x - mean / scale) / (std / scale)
        mean = torch.tensor(conv.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) / conv.input_scale
        std = torch.tensor(conv.std, dtype=torch.float32, device=device).view(1, 3, 1, 1) / conv.input_scale
        order = None
        if conv.classes is not None:
            index = wnid_to_index()
            position = {index[w]: j for j, w in enumerate(conv.classes)}
            order = torch.tensor([position[i] for i in range(len(conv.classes))], dtype=torch.int64, device=device)
        runners.append(Runner(model, mean, std, conv.color == "BGR", conv.class_offset, order))
    return runners


@torch.inference_mode()
def member_set_sums(
    crops: torch.Tensor,
    runners: list[Runner],
    set_positions: list[list[int]],
    chunk_size: int,
    channels_last: bool = True,
) -> torch.Tensor:
    """Per member, per image, per crop set: the sum of softmax probabilities over the set's crops.

    crops: uint8 [B, K, 3, S, S] on the runners' device. set_positions: for each crop set,
    positions into the K crops. Returns float32 [M, B, num_sets, C] on the same device.
    Forward passes run on at most `chunk_size` crops at a time; every chunk is used by every
    member before the next is made.
    """
    b, k = crops.shape[:2]
    flat = crops.reshape(b * k, *crops.shape[2:])
    probs: list[list[torch.Tensor]] = [[] for _ in runners]
    for start in range(0, b * k, chunk_size):
        x = flat[start : start + chunk_size].float().div_(255.0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for i, r in enumerate(runners):
            probs[i].append(torch.softmax(r.logits(x).float(), dim=1))
    out = []
    all_positions = list(range(k))
    for member_probs in probs:
        p = torch.cat(member_probs).view(b, k, -1)  # [B, K, C]
        per_set = [p.sum(dim=1) if pos == all_positions else p[:, pos].sum(dim=1) for pos in set_positions]
        out.append(torch.stack(per_set, dim=1))  # [B, num_sets, C]
    return torch.stack(out)


@dataclass
class EvalResult:
    samples: list[Sample]
    set_names: list[str]
    crops_per_set: dict[str, int]
    crops_per_image: int  # crops extracted and evaluated per image (union of the sets)
    tally: Tally
    probs: np.ndarray  # float32 [N, C], ensemble mean for the requested crop set
    requested_set: str
    seconds: float


def evaluate(
    samples: list[Sample],
    members: list[Member],
    scheme: CropScheme,
    set_names: list[str],
    requested_set: str,
    device: torch.device,
    batch_size: int,
    workers: int,
    channels_last: bool = True,
    progress: bool = True,
) -> EvalResult:
    """Evaluate the ensemble on `samples` for every crop set in `set_names` in one pass.

    Only the crops some set needs are extracted. `batch_size` is the number of crops per
    forward pass; a loader batch holds max(1, batch_size // K) images.
    """
    from tqdm import tqdm

    assert requested_set in set_names
    indices = sorted({i for name in set_names for i in scheme.set_indices(name)})
    where = {idx: pos for pos, idx in enumerate(indices)}
    set_positions = [[where[i] for i in scheme.set_indices(name)] for name in set_names]
    sizes = {name: len(pos) for name, pos in zip(set_names, set_positions)}
    k = len(indices)
    num_classes = members[0].num_classes
    images_per_batch = max(1, batch_size // k)

    runners = place_members(members, device, channels_last)
    num_sets = len(set_names)
    # top-1/top-5 correct per member (rows 0..M-1) and for the ensemble (row M), per set;
    # accumulated on the device so counting costs no host sync.
    correct = torch.zeros((len(members) + 1, num_sets, 2), dtype=torch.int64, device=device)
    probs_out = np.zeros((len(samples), num_classes), dtype=np.float32)
    req = set_names.index(requested_set)
    divisor = len(members) * sizes[requested_set]

    loader = crop_loader(samples, scheme, indices, images_per_batch, workers, pin_memory=device.type == "cuda")
    bar = tqdm(
        total=len(samples), unit="img", disable=not progress, dynamic_ncols=True, desc="evaluating", smoothing=0.1
    )
    start = time.perf_counter()
    done = 0
    try:
        for batch in loader:
            if batch.failures:
                raise DataError(batch.failures[0][1])
            crops = batch.crops.to(device, non_blocking=True)
            targets = batch.targets.to(device, non_blocking=True)
            sums = member_set_sums(crops, runners, set_positions, batch_size, channels_last)  # [M, B, S, C]
            ensemble = sums.sum(dim=0)  # [B, S, C]
            scores = torch.cat([sums, ensemble[None]]).transpose(1, 2)  # [M + 1, S, B, C]
            correct += topk_hits(scores, targets, (1, 5))
            probs_out[batch.indices.numpy()] = (ensemble[:, req] / divisor).cpu().numpy()
            done += int(batch.indices.shape[0])
            if progress:
                elapsed = max(time.perf_counter() - start, 1e-9)
                top1, top5 = correct[-1, req].tolist()
                bar.set_postfix(
                    {
                        "crops/s": f"{done * k * len(members) / elapsed:.1f}",
                        "top1_err": f"{100 * (done - top1) / done:.2f}%",
                        "top5_err": f"{100 * (done - top5) / done:.2f}%",
                    },
                    refresh=False,
                )
            bar.update(int(batch.indices.shape[0]))
    finally:
        bar.close()
    tally = Tally.from_correct(correct.cpu(), done, set_names)
    seconds = time.perf_counter() - start
    return EvalResult(samples, set_names, sizes, k, tally, probs_out, requested_set, seconds)
