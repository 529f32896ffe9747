"""The Ray Tune trainable: one LoRA fine-tuning run of a base model with sampled settings.

Tune calls `train_lora(config)` once per trial, where `config` holds only the sampled
hyperparameters (learning_rate, weight_decay, lora_r, optionally lora_alpha, lora_dropout;
confirmation runs add `seed`).
Everything fixed for the sweep arrives through `ray.tune.with_parameters`: `settings`, the
tokenized `data` and the frozen base `weights`, put in Ray's object store once per sweep and
shared by every trial (the weights zero-copy: one copy per node, however many trials).

Every `train.eval_every` steps the trial evaluates answer-token loss on the validation split
and reports it with an adapter checkpoint (adapter, optimizer and scheduler state: a few MB),
so ASHA can stop it and a retry resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import ray
import ray.tune
import torch
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from trainables.config import ModelConfig, TrainConfig
from trainables.evaluation import answer_loss, decision_accuracy, perplexity
from trainables.faults import fault_from_env
from trainables.loss import answer_token_loss
from trainables.memory import release_memory, skip_collection_at_exit
from trainables.models import (
    BaseWeights,
    linear_weights_seen_as_fp32,
    load_model,
    lora_target_modules,
    model_from_weights,
    silence_peft_deprecation,
)
from trainables.precision import autocast, resolve_precision
from trainables.prompts import IGNORE_INDEX, collate
from trainables.scratch import trial_scratch
from trainables.watchdog import StallWatchdog

__all__ = ["TrialSettings", "train_lora"]

log = logging.getLogger(__name__)
skip_collection_at_exit()  # in each trial process: Tune stops it once its trials are done


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a sweep shares: where the base model is and how to train."""

    model_path: str
    model: ModelConfig
    train: TrainConfig
    pad_token_id: int
    cpus: float = 1


def train_lora(
    config: dict,
    *,
    settings: TrialSettings,
    data: dict[str, list[dict]],
    weights: BaseWeights | None = None,
    callbacks: tuple[TrainerCallback, ...] = (),
) -> None:
    """Fine-tune LoRA adapters with `config`'s hyperparameters, reporting to Ray Tune.

    `weights`: the frozen base from Ray's object store (`tune.with_parameters`), shared with
    every trial on the node; without it (or for 4-bit QLoRA) the base loads from
    `settings.model_path`. `callbacks` go to the Trainer after medtune's own (benchmarks)."""
    # Reusing this process for the next trial (`run.reuse_actors`), Ray Tune stops this one
    # and gives its thread TUNE_FUNCTION_THREAD_TIMEOUT_S (read here, in the trial process;
    # Ray's default 2 s) to unwind: the Trainer, the temporary folder, `release_memory`. On
    # a loaded machine that took longer and the next trial errored ("Could not re-use actor",
    # seen in CI); a generous limit only matters when a trial truly hangs.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    try:
        # A stuck trial fails instead of holding its slot (trainables/watchdog.py).
        with StallWatchdog(settings.train.stall_timeout_s) as watchdog:
            watchdog.beat("preparing the trial (the base model, LoRA, its checkpoint)")
            _train(config, settings, data, weights, callbacks, watchdog)
    finally:
        release_memory()  # the trial's model and trainer are gone once _train returns


def _train(config, settings, data, weights, callbacks, watchdog: StallWatchdog) -> None:
    torch.set_num_threads(max(1, int(settings.cpus)))
    train = settings.train
    # Seeded before LoRA's random init, so trials differ only by their hyperparameters;
    # confirmation runs pass their own `seed`.
    set_seed(int(config.get("seed", train.seed)))
    cuda = trial_uses_cuda()
    device = torch.cuda.get_device_name() if cuda else "CPU"
    precision = resolve_precision(train.precision, cuda)  # per trial: nodes may differ
    model = _lora_model(config, settings, weights, precision)
    log.warning(
        "medtune trial: training on %s with %d torch threads in %s",
        device,
        torch.get_num_threads(),
        precision,
    )
    # Named by the trial, so a folder in the temporary directory says whose it was.
    with trial_scratch(ray.tune.get_context().get_trial_id() or "local") as work:
        resume, step = _restore_checkpoint(work)
        if step >= train.max_steps:
            # Finished before an interruption that Tune's state did not record; Trainer would
            # otherwise take one step past the budget.
            log.warning("medtune trial: checkpoint is at step %d, the full budget; done", step)
            return
        report = _ReportToTune(
            data["validation"],
            train,
            settings.pad_token_id,
            config,
            data.get("decisions"),
            precision=precision,
            device=device,
            watchdog=watchdog,
        )
        trainer = _AnswerTokenTrainer(
            model=model,
            args=_training_args(config, train, work, precision, cuda),
            train_dataset=data["train"],
            data_collator=partial(collate, pad_id=settings.pad_token_id),
            callbacks=[report, *callbacks],
        )
        trainer.train(resume_from_checkpoint=resume)


def _lora_model(config: dict, settings: TrialSettings, weights: BaseWeights | None, precision: str):
    if weights is not None and weights.compute not in ("fp32", precision):
        # Linear weights stored for another precision's autocast would change this trial's
        # numbers (a node that picks another format than the driver's); load them as saved.
        log.warning(
            "medtune trial: the shared base is stored for %s, this trial computes in %s; "
            "loading it from disk",
            weights.compute,
            precision,
        )
        weights = None
    if weights is not None and settings.model.quantization == "none":
        # Zero-copy over the object store: only LoRA and its optimizer state are this trial's.
        model = model_from_weights(weights)
    else:
        model = load_model(
            settings.model_path,
            trust_remote_code=settings.model.trust_remote_code,
            quantization=settings.model.quantization,
        )
    targets, fan_in_fan_out = lora_target_modules(model, settings.model.lora_target_modules)
    r = int(config["lora_r"])
    lora = LoraConfig(
        r=r,
        lora_alpha=config.get("lora_alpha") or settings.train.lora_alpha or 2 * r,
        lora_dropout=config.get("lora_dropout", settings.train.lora_dropout),
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with silence_peft_deprecation(), linear_weights_seen_as_fp32(model):
        return get_peft_model(model, lora)


def trial_uses_cuda() -> bool:
    """Whether this trial trains on a GPU: only on GPUs Ray gave it (`resources.gpus_per_trial`).

    Ray 2.60 leaves CUDA_VISIBLE_DEVICES as it was for a trial that asked for no GPU, so on a
    GPU node such a trial sees every GPU and would take one Ray may have given another trial
    (seen on an H200: tests/tune/test_cuda.py). Outside Ray (tests, benchmarks): any GPU."""
    if not torch.cuda.is_available():
        return False
    if not ray.is_initialized():
        return True
    return bool(ray.get_runtime_context().get_accelerator_ids().get("GPU"))


def _training_args(
    config: dict, train: TrainConfig, work: Path, precision: str = "fp32", cuda: bool = False
) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(work),
        max_steps=train.max_steps,
        per_device_train_batch_size=train.per_device_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=float(config["learning_rate"]),
        weight_decay=float(config.get("weight_decay", 0.0)),
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a share of max_steps
        optim="adamw_torch",
        # Evaluation is ours (token-weighted, in the callback), run at each save.
        eval_strategy="no",
        save_strategy="steps",
        save_steps=train.eval_every,
        save_total_limit=1,  # Tune keeps its own copies; the local one is only a staging area
        logging_steps=train.eval_every,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        seed=int(config.get("seed", train.seed)),
        use_cpu=not cuda,  # also on a GPU node, where Ray gave this trial no GPU
        bf16=precision == "bf16",  # autocast on CPU too (trainables/precision.py)
        fp16=precision == "fp16",
        dataloader_pin_memory=cuda,
        remove_unused_columns=False,
        # Batches of similar lengths: less compute spent on padding (BENCHMARKS.md, "Levers").
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        activation_checkpointing=train.activation_checkpointing,
        # Non-reentrant checkpointing needs no input that requires grad, which a frozen
        # embedding under LoRA does not give (PyTorch's recommended mode).
        activation_checkpointing_kwargs={"use_reentrant": False},
    )


class _AnswerTokenTrainer(Trainer):
    """The Trainer with the loss computed from logits at answer positions only
    (`trainables.loss`): the same value as the model's own loss, less compute."""

    loss_is_scaled_for_ga = True  # normalized over the whole accumulated batch below

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Accelerate puts mixed precision's autocast around `model.forward` only; the answer
        # loss calls the decoder stack and the head directly, so it enters autocast itself
        # (without this, bf16=True trained in fp32: BENCHMARKS.md, second 2026-11-29 section).
        with self.accelerator.autocast():
            loss = answer_token_loss(model, inputs, reduction="sum")
        if num_items_in_batch is None:  # the Trainer counts them for models taking loss kwargs
            count = int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
            num_items_in_batch = max(1, count) * self.current_gradient_accumulation_steps
        loss = loss / num_items_in_batch
        return (loss, None) if return_outputs else loss

    def floating_point_ops(self, inputs) -> int:
        """The Trainer's count for its logs (`total_flos`), 6 x tokens x non-embedding
        parameters as the Trainer's own, with the parameters counted once rather than by a
        walk over every module at each step (0.7% of a tiny-random step, py-spy)."""
        if not hasattr(self, "_non_embedding_parameters"):
            self._non_embedding_parameters = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs["input_ids"].numel() * self._non_embedding_parameters


def _restore_checkpoint(work: Path) -> tuple[str | None, int]:
    """Copy Tune's latest checkpoint (if this trial is resumed) where Trainer resumes from;
    return its folder and step (None, 0 for a fresh trial)."""
    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:
        return None, 0
    with checkpoint.as_directory() as src:
        state = Path(src) / "trainer_state.json"
        step = json.loads(state.read_text())["global_step"]
        dst = work / f"checkpoint-{step}"
        shutil.copytree(src, dst)
    log.info("resuming from step %d", step)
    return str(dst), step


class _ReportToTune(TrainerCallback):
    """Evaluate at every save and hand Tune the metrics with the checkpoint just written."""

    def __init__(
        self,
        validation: list[dict],
        train: TrainConfig,
        pad_id: int,
        config: dict,
        decisions: list[dict] | None = None,
        precision: str = "fp32",
        device: str = "CPU",
        watchdog: StallWatchdog | None = None,
    ):
        self.device = device  # the GPU's name, or CPU: recorded with every evaluation
        self.validation, self.train, self.pad_id, self.config = validation, train, pad_id, config
        self.decisions = decisions  # yes/no/maybe options of validation (data.task=decision)
        self.precision = precision  # evaluation computes as training does, as Trainer's would
        self.train_loss = float("nan")
        self.clock = time.perf_counter()
        self.tokens = 0
        # Times each step, its checkpoint write and each evaluation batch; not reports.
        self.watchdog = watchdog or StallWatchdog(None)

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock, self.tokens = time.perf_counter(), state.num_input_tokens_seen
        self.fault = fault_from_env()  # tests only (trainables/faults.py)
        self.watchdog.beat("the start of training (its data loader, the first batch)")

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.watchdog.beat(f"step {state.global_step + 1}")
        if self.fault is not None:
            self.fault.before_step(state.global_step + 1, model)

    def on_step_end(self, args, state, control, **kwargs):
        self.watchdog.beat(f"the end of step {state.global_step} (logging, saving its checkpoint)")

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        # Every step, before the optimizer applies it: the Trainer's logged loss averages NaN
        # steps away (logging_nan_inf_filter), so a check of the logs alone comes too late or
        # never. A NaN or inf loss makes the gradients NaN; fp16's loss scaler skips inf steps
        # itself.
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if args.fp16 or not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads)
        if not torch.isfinite(norm):
            raise FloatingPointError(
                f"training loss is not finite at step {state.global_step + 1} (gradient norm "
                f"{norm.item()}); the step was not applied; learning_rate="
                f"{self.config['learning_rate']:.3g} is likely too high"
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.train_loss = float(logs["loss"])
            if not math.isfinite(self.train_loss):
                raise FloatingPointError(
                    f"training loss is {self.train_loss} at step {state.global_step}; "
                    f"learning_rate={self.config['learning_rate']:.3g} is likely too high"
                )

    def on_save(self, args, state, control, model=None, **kwargs):
        elapsed = time.perf_counter() - self.clock
        tokens = state.num_input_tokens_seen - self.tokens
        where = next(model.parameters()).device.type  # "cuda" or "cpu", as Trainer placed it
        step = state.global_step
        batch = partial(self.watchdog.beat, f"the evaluation at step {step}")  # timed per batch
        with autocast(self.precision, where):
            loss = answer_loss(
                model, self.validation, self.train.eval_batch_size, self.pad_id, on_batch=batch
            )
        metrics = {
            "eval_loss": loss,
            "eval_perplexity": perplexity(loss),
            "train_loss": self.train_loss,
            "step": state.global_step,
            "tokens_per_second": tokens / elapsed if elapsed > 0 else 0.0,
            # Ray's node id, not its IP: nodes on one machine share an address.
            "node_id": ray.get_runtime_context().get_node_id(),
            "precision": self.precision,
            "device": self.device,
        }
        if self.decisions:
            # Scored as export scores the test decisions: the most likely of the three answers.
            with autocast(self.precision, where):
                scores = decision_accuracy(
                    model,
                    self.decisions,
                    self.pad_id,
                    batch_size=self.train.eval_batch_size,
                    on_batch=batch,
                )
            metrics |= {"eval_accuracy": scores["accuracy"], "eval_macro_f1": scores["macro_f1"]}
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        checkpoint = ray.tune.Checkpoint.from_directory(str(folder))
        # Blocked until the driver takes the result (and, paused by ASHA, for good): not the
        # trial's own time, and a checkpoint's upload to slow storage is not a stall either.
        with self.watchdog.paused():
            ray.tune.report(metrics, checkpoint=checkpoint)
        # Training throughput excludes evaluation and the checkpoint upload.
        self.clock, self.tokens = time.perf_counter(), state.num_input_tokens_seen
