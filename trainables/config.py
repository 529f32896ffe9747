"""Typed settings owned by the trainable: the model, the data and the training loop.

The sweep's root config (`tune.config.SweepConfig`) composes these sections; the trainable
receives them as plain objects and never sees the CLI or the searcher.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelConfig(Section):
    name: str = Field(
        "smollm2-135m",
        description="Built-in name (smollm2-135m, tiny-random), a Hugging Face hub id, "
        "or a local folder holding a model saved with save_pretrained.",
    )
    lora_target_modules: list[str] | None = Field(
        None,
        description="Module names LoRA wraps; empty picks them from the architecture "
        "(q_proj/v_proj for Llama-like models, c_attn for GPT-2).",
    )
    trust_remote_code: bool = Field(
        False, description="Allow model code from the hub to run. Off unless you trust it."
    )
    cache_dir: str | None = Field(
        None,
        description="Where converted and built models are cached; default "
        "$MEDTUNE_CACHE or ~/.cache/medtune.",
    )


class DataConfig(Section):
    source: Literal["demo", "medquad", "instruction"] = Field(
        "demo",
        description="demo: built-in demo pairs; medquad: the MedQuAD XML tree; "
        "instruction: {instruction, input, output} as a JSON list or JSON Lines.",
    )
    path: str | None = Field(
        None, description="Folder (medquad) or file (instruction); unused for demo."
    )
    max_length: int = Field(
        256, ge=32, le=8192, description="Tokens per example; the answer is cut first."
    )
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of groups for validation.")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of groups for test.")
    max_records: int | None = Field(
        None, ge=10, description="Keep this many cleaned records (whole groups), for quick runs."
    )
    seed: int = Field(0, description="Seed of the group split.")
    system_prompt: str | None = Field(
        None, description="System message for chat templates; empty keeps the template's own."
    )


class TrainConfig(Section):
    max_steps: int = Field(40, gt=0, description="Optimizer steps per trial (the full budget).")
    eval_every: int = Field(
        10, gt=0, description="Steps between evaluations; ASHA counts time in evaluations."
    )
    per_device_batch_size: int = Field(4, gt=0, description="Training examples per step.")
    eval_batch_size: int = Field(8, gt=0, description="Examples per evaluation batch.")
    eval_max_examples: int | None = Field(
        256, ge=1, description="Validation examples scored at each evaluation (whole set if empty)."
    )
    gradient_accumulation_steps: int = Field(1, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up.")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = "cosine"
    lora_alpha: float | None = Field(
        None,
        gt=0,
        description="LoRA alpha when the search space does not sample it; empty means 2 x rank.",
    )
    lora_dropout: float = Field(
        0.05, ge=0, lt=1, description="LoRA dropout when the search space does not sample it."
    )
    seed: int = Field(0, description="Seed of LoRA init and data order in every trial.")
