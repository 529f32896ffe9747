"""Typed settings owned by the trainable: the model, the data and the training loop.

The sweep's root config (`tune.config.SweepConfig`) composes these sections; the trainable
receives them as plain objects and never sees the CLI or the searcher.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


def default_cache_root() -> Path:
    """Where medtune keeps what it builds or copies (converted models, copies of remote
    sweeps) unless told otherwise: $MEDTUNE_CACHE, else ~/.cache/medtune."""
    return Path(os.environ.get("MEDTUNE_CACHE") or Path.home() / ".cache" / "medtune").expanduser()


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
    quantization: Literal["none", "4bit"] = Field(
        "none",
        description="4bit: load the frozen base in 4-bit NF4 for QLoRA (bitsandbytes, CUDA "
        "only; `pip install bitsandbytes`). Export merges into the full-precision base.",
    )


# Which sources read a source-specific key: setting one for another source is a mistake
# (a typo in data.source, or a key that would silently do nothing).
_SOURCE_KEYS = {
    "task": ("pubmedqa",),
    "test_ids": ("pubmedqa",),
    "fold": ("pubmedqa",),
    "drop_non_patient_info": ("instruction",),
    "question_field": ("table", "disk"),
    "answer_field": ("table", "disk"),
    "context_field": ("table", "disk"),
    "group_field": ("table", "disk"),
}


class DataConfig(Section):
    """Where the question/answer records come from and how they are split; docs/data.md."""

    source: Literal["demo", "medquad", "pubmedqa", "instruction", "table", "disk"] = Field(
        "demo",
        description="demo: built-in demo pairs; medquad: the MedQuAD XML tree (folder or "
        ".tar.gz) or a hub copy's CSV (qtype, Question, Answer); pubmedqa: PQA-L's "
        "ori_pqal.json or its Hugging Face export (JSON, JSON Lines, Parquet); instruction: "
        "{instruction, input, output} as a JSON list or JSON Lines; table: any CSV, JSON, "
        "JSON Lines or Parquet with the columns named by data.*_field; disk: a folder written "
        "by datasets' save_to_disk, read like a table.",
    )
    path: str | None = Field(
        None,
        description="The file or folder to read; unused for demo. 'hub:<org>/<name>' (or "
        "'hub:<org>/<name>/<subset>') loads a Hugging Face dataset, needing the hub or its cache.",
    )
    task: Literal["long_answer", "decision"] = Field(
        "long_answer",
        description="pubmedqa: long_answer (question + abstract -> the abstract's conclusion) "
        "or decision (question + abstract -> yes / no / maybe).",
    )
    test_ids: str | None = Field(
        None,
        description="pubmedqa: the official test PMIDs, as test_ground_truth.json or one PMID a "
        "line; empty looks for test_ground_truth.json next to data.path.",
    )
    fold: int | None = Field(
        None,
        ge=0,
        le=9,
        description="pubmedqa: take train/validation from this official cross-validation fold "
        "(splits/pqal_cv_folds.json next to data.path); empty splits the non-test items "
        "by data.seed.",
    )
    drop_non_patient_info: bool = Field(
        False,
        description="instruction: drop WikiDoc's site-help pages and unfilled templates "
        "('What causes (disease name)?'); counted as dropped 'filtered'.",
    )
    question_field: str = Field("question", description="table, disk: the question column.")
    answer_field: str = Field("answer", description="table, disk: the answer column.")
    context_field: str | None = Field(
        None, description="table, disk: a column of context shown with the question (optional)."
    )
    group_field: str | None = Field(
        None,
        description="table, disk: rows sharing this column's value never straddle two splits; "
        "empty groups by normalized question.",
    )
    max_length: int = Field(
        256, ge=32, le=8192, description="Tokens per example; the answer is cut first."
    )
    val_fraction: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description="Share of records (whole groups) for validation; of the records left when "
        "the source fixes the test split (pubmedqa).",
    )
    test_fraction: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description="Share of records (whole groups) for test; unused when the source fixes "
        "the test split (pubmedqa).",
    )
    max_records: int | None = Field(
        None, ge=10, description="Keep this many cleaned records (whole groups), for quick runs."
    )
    seed: int = Field(0, description="Seed of the group split.")
    system_prompt: str | None = Field(
        None, description="System message for chat templates; empty keeps the template's own."
    )
    allow_leakage: bool = Field(
        False,
        description="Start a sweep even when the test split shares a group or an exact "
        "question with train (a warning is printed). Off: such a sweep is refused.",
    )

    @field_validator(*_SOURCE_KEYS)
    @classmethod
    def _only_for_its_sources(cls, value, info: ValidationInfo):
        sources = _SOURCE_KEYS[info.field_name]
        source = info.data.get("source")  # absent when data.source itself was invalid
        if (
            source is not None
            and source not in sources
            and value != cls.model_fields[info.field_name].default
        ):
            wanted = " or ".join(f"data.source={s}" for s in sources)
            raise ValueError(f"only {wanted} reads it, and data.source is {source}")
        return value


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
    gradient_accumulation_steps: int = Field(
        1, gt=0, description="Batches summed into one optimizer step (a step sees batch x this)."
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up.")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "cosine", description="How the learning rate moves after warm-up, over train.max_steps."
    )
    lora_alpha: float | None = Field(
        None,
        gt=0,
        description="LoRA alpha when the search space does not sample it; empty means 2 x rank.",
    )
    lora_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="LoRA dropout when the search space does not sample it (PEFT's default, 0). "
        "0.05 cost the same sweeps 1.01-1.09x in training rate and gained no validation loss in "
        "10 paired trials; its random masks cost 1.04x fp32 and 1.16-1.21x bf16 in a bare loop "
        "on a 2-core CPU (BENCHMARKS.md).",
    )
    group_by_length: bool = Field(
        True,
        description="Batch examples of similar length together (less padding); off keeps the "
        "Trainer's random order.",
    )
    activation_checkpointing: bool = Field(
        False,
        description="Recompute each layer's activations in the backward pass instead of "
        "keeping them (gradient checkpointing): less memory per trial for more compute.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Number format of training and trial evaluation (mixed precision: fp32 "
        "LoRA weights, bf16/fp16 matmuls). auto: bf16 on GPUs that support it (else fp16) and on "
        "CPUs with AMX or AVX512_BF16, fp32 on other CPUs; fp16 needs CUDA.",
    )
    seed: int = Field(0, description="Seed of LoRA init and data order in every trial.")
    stall_timeout_s: float | None = Field(
        1800,
        gt=0,
        description="A trial whose training step or evaluation batch runs longer than this "
        "(a hung data loader, GPU or filesystem) fails with where it stuck, and its slot goes to "
        "the next trial; waits on the driver and checkpoint uploads are not counted. Empty turns "
        "the check off.",
    )
