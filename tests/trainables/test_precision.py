"""`train.precision`: what auto resolves to here, and that bf16 trains in bf16 on the CPU."""

import pytest
import torch

from trainables.precision import autocast, cpu_multiplies_bf16, resolve_precision


def test_explicit_precisions_are_kept():
    for precision in ("fp32", "bf16", "fp16"):
        assert resolve_precision(precision) == precision


def test_auto_follows_this_machine():
    if torch.cuda.is_available():
        expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    else:
        # /proc/cpuinfo is the kernel's word on AMX and AVX512_BF16, independent of torch's
        # probes.
        try:
            flags = set(open("/proc/cpuinfo").read().split())
        except OSError:
            pytest.skip("no /proc/cpuinfo to check the CPU's bf16 instructions against")
        native = bool(flags & {"amx_tile", "avx512_bf16"})
        assert cpu_multiplies_bf16() == native
        expected = "bf16" if native else "fp32"
    assert resolve_precision("auto") == expected


def test_autocast_computes_matmuls_in_the_precision():
    a = torch.randn(4, 4)
    with autocast("fp32", "cpu"):
        assert (a @ a).dtype == torch.float32
    with autocast("bf16", "cpu"):  # on the CPU also where a GPU is present
        assert (a @ a).dtype == torch.bfloat16
