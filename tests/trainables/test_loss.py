"""Answer-position logits give the model's own loss, for every architecture they take a
shortcut for, and train the same as the Trainer's default loss."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainingArguments

from trainables.loss import _PLAIN_HEAD, answer_token_loss
from trainables.models import load_model
from trainables.prompts import IGNORE_INDEX
from trainables.trainable import _AnswerTokenTrainer

SMALL = {
    "vocab_size": 96,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "pad_token_id": 0,
}
# Names some architectures use instead.
ALIASES = {
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64},
    "opt": {"ffn_dim": 64, "word_embed_proj_dim": 32},
}


def tiny(model_type: str, **extra):
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **SMALL | ALIASES.get(model_type, {}) | extra)
    return AutoModelForCausalLM.from_config(config).eval()


def batch(vocab: int = 96, seed: int = 0) -> dict[str, torch.Tensor]:
    """Three right-padded rows with the prompt unlabelled, as `collate` makes them."""
    g = torch.Generator().manual_seed(seed)
    lengths, prompts = [12, 9, 5], [4, 6, 2]
    ids = torch.zeros((3, 12), dtype=torch.long)
    labels = torch.full((3, 12), IGNORE_INDEX)
    mask = torch.zeros((3, 12), dtype=torch.long)
    for i, (n, p) in enumerate(zip(lengths, prompts, strict=True)):
        ids[i, :n] = torch.randint(1, vocab, (n,), generator=g)
        labels[i, p:n] = ids[i, p:n]
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@pytest.mark.parametrize("model_type", sorted(_PLAIN_HEAD))
def test_answer_positions_give_the_models_own_loss(model_type):
    model = tiny(model_type)
    b = batch()
    with torch.no_grad():
        expected = model(**b).loss
        got = answer_token_loss(model, b)
    assert torch.allclose(got, expected, rtol=1e-5), (model_type, got, expected)


def test_a_head_with_soft_capping_takes_the_full_forward():
    # gemma2 caps its logits after the head: the shortcut would be wrong, the fallback is not.
    model = tiny("gemma2", head_dim=8, final_logit_softcapping=2.0)
    assert model.config.model_type not in _PLAIN_HEAD
    b = batch()
    with torch.no_grad():
        assert torch.allclose(answer_token_loss(model, b), model(**b).loss, rtol=1e-5)


def test_lora_gradients_match_the_full_logits_loss(tiny_model_path):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(load_model(tiny_model_path), lora)
    b = batch(vocab=model.config.vocab_size)
    grads = []
    for loss_fn in (lambda: model(**b).loss, lambda: answer_token_loss(model, b)):
        model.zero_grad()
        loss_fn().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert len(grads[0]) > 0
    for full, ours in zip(*grads, strict=True):
        assert torch.allclose(full, ours, rtol=1e-4, atol=1e-7)


def _rows() -> list[dict]:
    data = []
    for seed in range(8):
        b = batch(vocab=512, seed=seed)
        for i in range(3):
            n = int(b["attention_mask"][i].sum())
            data.append(
                {"input_ids": b["input_ids"][i, :n].tolist(), "labels": b["labels"][i, :n].tolist()}
            )
    return data


def _collate(rows):
    width = max(len(r["input_ids"]) for r in rows)
    out = {"input_ids": [], "labels": [], "attention_mask": []}
    for r in rows:
        pad = width - len(r["input_ids"])
        out["input_ids"].append(r["input_ids"] + [0] * pad)
        out["labels"].append(r["labels"] + [IGNORE_INDEX] * pad)
        out["attention_mask"].append([1] * len(r["input_ids"]) + [0] * pad)
    return {k: torch.tensor(v) for k, v in out.items()}


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_steps_equal_the_default_loss_steps(tiny_model_path, tmp_path, accumulation):
    """Two optimizer steps with medtune's Trainer and with the stock one end at the same
    weights, with and without gradient accumulation (token-weighted across micro-batches),
    and count the same floating-point operations."""
    data, collate = _rows(), _collate
    ends, flos = [], []
    for cls in (Trainer, _AnswerTokenTrainer):
        torch.manual_seed(0)
        lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        model = get_peft_model(load_model(tiny_model_path), lora)
        args = TrainingArguments(
            output_dir=str(tmp_path / cls.__name__),
            max_steps=2,
            per_device_train_batch_size=3,
            gradient_accumulation_steps=accumulation,
            learning_rate=1e-1,
            # Plain SGD: a wrongly scaled loss moves the weights differently (Adam would hide
            # a constant factor).
            optim="sgd",
            train_sampling_strategy="sequential",
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            remove_unused_columns=False,
        )
        trainer = cls(model=model, args=args, train_dataset=data, data_collator=collate)
        trainer.train()
        ends.append([p.detach().clone() for p in model.parameters() if p.requires_grad])
        flos.append(trainer.state.total_flos)
    for default, ours in zip(*ends, strict=True):
        assert torch.allclose(default, ours, rtol=1e-4, atol=1e-6)
    # medtune counts the parameters once (`floating_point_ops`): the same total as the stock
    # Trainer's count at every step.
    assert flos[0] == flos[1] > 0


@pytest.mark.parametrize("bf16", [False, True])
def test_the_trainer_multiplies_in_the_precision_it_was_given(tiny_model_path, tmp_path, bf16):
    """Accelerate's autocast wraps `model.forward`, which the answer loss bypasses: every
    linear layer (base, LoRA and head) must still compute in bf16 when bf16=True."""
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(load_model(tiny_model_path), lora)
    seen = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=bf16,
        remove_unused_columns=False,
    )
    _AnswerTokenTrainer(
        model=model, args=args, train_dataset=_rows(), data_collator=_collate
    ).train()
    assert seen == {torch.bfloat16 if bf16 else torch.float32}
