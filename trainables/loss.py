"""Logits only where an answer token is predicted: the loss training and evaluation share.

A causal LM's own loss projects every position onto the vocabulary (49,152 logits per token
for SmolLM2), then throws away the prompt and padding positions. Here the output head runs
only on the positions whose next token is labelled, which gives the same loss with less
compute and memory (measured in BENCHMARKS.md, "Levers").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.prompts import IGNORE_INDEX

__all__ = ["answer_logits", "answer_token_loss"]

# Model types whose logits are exactly `get_output_embeddings()(last hidden state)`: no logit
# soft-capping, scaling or bias added after the head. tests/trainables/test_loss.py checks each
# against the model's own loss; any other type takes the model's full forward (same result).
_PLAIN_HEAD = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "gpt2", "biogpt", "opt", "gpt_neox", "phi3"}
)


def answer_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at every position whose next token is labelled, and those tokens.

    Returns `(logits, targets)` of shapes `[n, vocab]` and `[n]`, in row-major order of the
    batch, where `n` counts the labelled positions (`labels[:, 1:] != -100`). `model` is a
    causal LM, bare or wrapped by PEFT.
    """
    labels = batch["labels"][:, 1:]
    scored = labels != IGNORE_INDEX
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if causal.config.model_type in _PLAIN_HEAD:
        # The decoder stack alone (LoRA layers are injected into it), then the head on the
        # scored positions only.
        hidden = causal.base_model(**inputs)[0]
        logits = causal.get_output_embeddings()(hidden[:, :-1][scored])
    else:
        logits = model(**inputs).logits[:, :-1][scored]
    return logits, labels[scored]


def answer_token_loss(
    model, batch: dict[str, torch.Tensor], reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy over the answer tokens of `batch` (`"mean"` per token, or `"sum"`)."""
    logits, targets = answer_logits(model, batch)
    return F.cross_entropy(logits.float(), targets, reduction=reduction)
