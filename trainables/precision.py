"""The number format a trial trains and evaluates in, chosen where the trial runs.

`train.precision=auto` picks what the trial's own hardware multiplies fastest: bf16 on a GPU
that supports it (fp16 on older ones); bf16 on a CPU with bf16 dot-product instructions,
which oneDNN's bf16 matmuls use: AMX tiles (Intel Xeon Sapphire Rapids and later; a SmolLM2
trial at 1.79-2.13x its fp32 rate) or AVX512_BF16 (AMD Zen 4 and later, Intel Cooper Lake;
1.43-1.72x; BENCHMARKS.md); fp32 on other CPUs, where bf16 is emulated and slower. Mixed
precision in every case: LoRA's weights and optimizer state stay fp32 and matmuls run in
bf16/fp16 under autocast, as the Trainer does for `bf16=True`; losses are computed in fp32.
Where every trial of a CPU sweep computes in bf16, the frozen base's linear weights are
shared already in bf16, the values autocast would cast them to (`tune.sweep`,
`trainables.models.store_linear_weights_in`): the same numbers, less memory.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["DTYPES", "autocast", "cpu_multiplies_bf16", "resolve_precision"]

# The torch dtype of each reduced precision: autocast computes in it, the shared base stores it.
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# torch's own CPU probes (private; one that is absent counts as no): AMX tiles, AVX512_BF16.
_BF16_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AMX or AVX512_BF16)."""
    return any(getattr(torch.cpu, name, lambda: False)() for name in _BF16_PROBES)


def resolve_precision(requested: str, cuda: bool | None = None) -> str:
    """`train.precision` as this process will train: "fp32", "bf16" or "fp16". `cuda`: whether
    it trains on a GPU (default: whether it sees one)."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() if cuda is None else cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_multiplies_bf16() else "fp32"


def autocast(precision: str, device: str):
    """The autocast context a resolved `precision` computes in on `device` ("cpu" or "cuda");
    none for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=DTYPES[precision])
