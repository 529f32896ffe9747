"""The number format a trial trains and evaluates in, chosen where the trial runs.

`train.precision=auto` picks what the trial's own hardware multiplies fastest: bf16 on a GPU
that supports it (fp16 on older ones), bf16 on a CPU with AMX tiles (Intel Xeon Sapphire
Rapids and later: 1.79-1.97x the fp32 trial's rate for SmolLM2 in BENCHMARKS.md, "One
trial's training throughput, fp32 and bf16"), fp32 on other CPUs, where bf16 is emulated or
barely faster. Mixed precision in every case: the weights stay fp32 and matmuls run in
bf16/fp16 under autocast, as the Trainer does for `bf16=True`; losses are computed in fp32.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast", "cpu_has_amx", "resolve_precision"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles, which multiply bf16 natively (oneDNN uses them)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private; absent: no AMX known
    return bool(probe and probe())


def resolve_precision(requested: str, cuda: bool | None = None) -> str:
    """`train.precision` as this process will train: "fp32", "bf16" or "fp16". `cuda`: whether
    it trains on a GPU (default: whether it sees one)."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() if cuda is None else cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_amx() else "fp32"


def autocast(precision: str, device: str):
    """The autocast context a resolved `precision` computes in on `device` ("cpu" or "cuda");
    none for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=_DTYPES[precision])
