"""The CUDA paths of a trial: 4-bit NF4 loading for QLoRA. Skipped without a CUDA GPU (CI has
none); run on a GPU machine as `make test-gpu` (README, "On a GPU")."""

import pytest
import torch

from trainables.models import load_model, lora_target_modules

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_4bit_base_holds_frozen_nf4_weights_on_the_gpu(tiny_model_path):
    bnb = pytest.importorskip("bitsandbytes", reason="QLoRA needs `pip install bitsandbytes`")
    full = load_model(tiny_model_path)
    model = load_model(tiny_model_path, quantization="4bit")

    quantized = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    targets, _ = lora_target_modules(full, None)
    # Every linear layer LoRA wraps is NF4 (double-quantized), stored on the GPU.
    assert {n.rsplit(".", 1)[-1] for n in quantized} >= set(targets)
    for module in quantized.values():
        assert module.weight.quant_type == "nf4"
        assert module.weight.quant_state.nested  # bnb_4bit_use_double_quant
        assert module.weight.device.type == "cuda"
    assert not any(p.requires_grad for p in model.parameters())  # the frozen base
    # NF4 packs two weights per byte: the quantized layers take about an eighth of fp32's bytes.
    packed = sum(m.weight.numel() for m in quantized.values())  # uint8 elements
    dense = sum(dict(full.named_modules())[n].weight.numel() for n in quantized)
    assert packed * 2 == dense
    # Same model: the 4-bit base's logits follow the full-precision ones closely.
    ids = torch.arange(1, 17).unsqueeze(0)
    with torch.no_grad():
        expected = full(ids).logits.float()
        got = model(ids.cuda()).logits.float().cpu()
    assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0) > 0.9
