"""The tensors of a member: finding the weights inside a loaded file, checking them, hashing them.

Format-independent: every reader hands over what it loaded (a state dict, a wrapper dict, a
module), `unwrap_state_dict` finds the weights in it, `check_tensor_kinds` refuses what is
not plain dense float data before anything touches it, and `tensor_problem` judges the
values (finite, below MAX_WEIGHT_MAGNITUDE, positive BatchNorm variances).
"""

from __future__ import annotations

import hashlib
import math
import os

import torch
from torch import nn

from ..preload import MAX_TENSOR_ELEMENTS, Refusal

RAW_KEYS = ("state_dict", "model_state_dict", "model")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema", "ema_model", "module_ema")
PREFIXES = ("module.", "_orig_mod.", "model.")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_WEIGHT_MAGNITUDE = 1e30  # trained weights stay far below; float32 sums of such values overflow


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def state_digest(state: dict[str, torch.Tensor]) -> str | None:
    """A hash of the tensors themselves (names, dtypes, shapes, values), whatever the file format;
    None for no tensors (nothing to compare: two members without tensors are not the same)."""
    if not state:
        return None
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Finding the weights


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _strip_prefixes(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    stripped: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped.append(prefix)
                changed = True
    return state, stripped


def _state_of(obj: object) -> dict[str, torch.Tensor] | None:
    """A tensor dict from a state dict, an EMA wrapper's dict or a module."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if k != "n_averaged"}  # torch.optim.swa_utils.AveragedModel
        if _is_tensor_dict(tensors):
            return tensors
    return None


def _first_state(obj: dict, keys: tuple[str, ...]) -> tuple[dict[str, torch.Tensor] | None, str]:
    """(the first tensor dict under one of `keys`, that key) or (None, "")."""
    for key in keys:
        if key in obj and (s := _state_of(obj[key])) is not None:
            return s, key
    return None, ""


def _found_states(obj: object) -> tuple[dict | None, str, dict | None, str]:
    """(raw weights, their key, EMA weights, their key) inside a loaded checkpoint."""
    direct = _state_of(obj)
    if direct is not None:
        return direct, "(top level)", None, ""
    if not isinstance(obj, dict):
        return None, "", None, ""
    raw, raw_key = _first_state(obj, RAW_KEYS)
    if raw is None:  # one more level, e.g. {"model": {"state_dict": ...}}
        for key in RAW_KEYS:
            if isinstance(obj.get(key), dict):
                inner = next((_state_of(obj[key][k]) for k in RAW_KEYS if k in obj[key]), None)
                if inner is not None:
                    raw, raw_key = inner, f"{key}.…"
                    break
    ema, ema_key = _first_state(obj, EMA_KEYS)
    return raw, raw_key, ema, ema_key


def unwrap_state_dict(obj: object, prefer: str | None = None) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Find the weights inside a loaded checkpoint: (state dict, which weights, notes).

    Accepts a bare state dict, one nested under `state_dict`, `model_state_dict` or `model`
    (beside optimizer state, epochs, args...), EMA weights under `state_dict_ema`,
    `model_ema`, `ema`, ... (raw weights are used unless `prefer == "ema"` or there are no
    others), and a whole module. Prefixes `module.`, `_orig_mod.` and `model.` are removed
    when every key carries them (repeatedly: `module._orig_mod.` too).
    """
    notes: list[str] = []
    raw, raw_key, ema, ema_key = _found_states(obj)
    if raw is None and ema is None:
        kind = type(obj).__name__
        keys = f" with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict) else ""
        raise Refusal(
            f"no state dict found (a {kind}{keys}); expected a dict of tensors, bare or under one of "
            f"{list(RAW_KEYS + EMA_KEYS)}"
        )
    if raw is not None and ema is not None:
        which = "ema" if prefer == "ema" else "raw"
        other = "raw weights (weights: raw)" if which == "ema" else "EMA weights (--ema, or weights: ema in a sidecar)"
        notes.append(f"holds raw ('{raw_key}') and EMA ('{ema_key}') weights; using {which}, choose {other}")
        state = ema if which == "ema" else raw
    elif ema is not None:
        which, state = "ema", ema
        notes.append(f"only EMA weights ('{ema_key}')")
    else:
        if prefer == "ema":
            raise Refusal("EMA weights were asked for (--ema or weights: ema) but the file holds none")
        which, state = "", raw
    state, stripped = _strip_prefixes(dict(state))
    if stripped:
        notes.append("stripped prefix " + "".join(stripped))
    return state, which, notes


# ---------------------------------------------------------------------------------------
# Checking them


def check_tensor_kinds(state: dict[str, torch.Tensor]) -> None:
    """Refuse tensors that are not plain dense float weights, before anything touches their data."""
    for key, t in state.items():
        if t.layout != torch.strided or t.is_quantized or t.device.type != "cpu":
            kind = (
                "quantized"
                if t.is_quantized
                else (f"on device {t.device.type}" if t.device.type != "cpu" else "sparse")
            )
            raise Refusal(f"tensor {key!r} is {kind}; only dense float weights are supported")
        if t.numel() > MAX_TENSOR_ELEMENTS:
            raise Refusal(f"tensor {key!r} declares {t.numel():,} elements, far more than any supported layer")
        if t.numel() and t.numel() * t.element_size() > t.untyped_storage().nbytes():
            raise Refusal(f"tensor {key!r} is a broadcast view without its data (stride 0); re-save real weights")
        if key.endswith("num_batches_tracked"):
            continue
        if t.dtype not in FLOAT_DTYPES:
            raise Refusal(
                f"tensor {key!r} has dtype {str(t.dtype).replace('torch.', '')}; weights must be floating point"
            )


def tensor_problem(state: dict[str, torch.Tensor]) -> str | None:
    """The first corrupt value of `state` (NaN or Inf, magnitude above MAX_WEIGHT_MAGNITUDE,
    BatchNorm variances <= 0), or None."""
    for key, tensor in state.items():
        if not tensor.is_floating_point() or not tensor.numel():
            continue
        low, high = torch.aminmax(tensor.detach())
        biggest = max(-float(low), float(high))
        if not math.isfinite(biggest):  # NaN propagates through aminmax
            return f"tensor {key!r} holds NaN or Inf; the weights are corrupt"
        if biggest > MAX_WEIGHT_MAGNITUDE:
            return (
                f"tensor {key!r} holds values of magnitude {biggest:.3g} (above {MAX_WEIGHT_MAGNITUDE:g}), which "
                "overflow float32 arithmetic; the weights are corrupt"
            )
    for key, tensor in state.items():
        if key.endswith("running_var") and tensor.is_floating_point() and (tensor <= 0).any():
            return f"BatchNorm {key!r} has values <= 0; the statistics are corrupt"
    return None
