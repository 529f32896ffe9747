"""The trainable inside a real Ray Tune run: reports, checkpoints, resume after a failure."""

import dataclasses
import os
from unittest import mock

import pytest
import torch
from peft import PeftModel
from ray import tune as ray_tune
from transformers import TrainerCallback

from trainables.config import DataConfig, ModelConfig, TrainConfig
from trainables.data import load_records, split_records
from trainables.evaluation import answer_loss
from trainables.models import base_weights, load_model
from trainables.precision import autocast
from trainables.prompts import encode_records
from trainables.trainable import TrialSettings, _lora_model, train_lora

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tiny_tokenizer):
    records, _ = load_records(DataConfig(source="demo", max_records=80))
    splits = split_records(records, val_fraction=0.15, test_fraction=0.1, seed=0)
    return {
        name: encode_records(tiny_tokenizer, splits[name], 128)[0]
        for name in ("train", "validation")
    }


def _settings(path, tok):
    return TrialSettings(
        model_path=path,
        model=ModelConfig(name="tiny-random"),
        train=TrainConfig(max_steps=20, eval_every=5, per_device_batch_size=4),
        pad_token_id=tok.pad_token_id,
    )


def _flaky(config, *, settings, data, marker):
    """train_lora, but the first attempt dies right after its second report."""
    if ray_tune.get_checkpoint() is not None or os.path.exists(marker):
        return train_lora(config, settings=settings, data=data)
    real, calls = ray_tune.report, []

    def report_then_fail(metrics, checkpoint=None):
        real(metrics, checkpoint=checkpoint)
        calls.append(metrics["step"])
        if len(calls) == 2:
            open(marker, "w").close()
            raise RuntimeError("injected failure")

    with mock.patch.object(ray_tune, "report", report_then_fail):
        train_lora(config, settings=settings, data=data)


def test_failed_trial_resumes_from_its_checkpoint(
    ray_2_cpus, tmp_path, tiny_model_path, tiny_tokenizer, data
):
    trainable = ray_tune.with_parameters(
        _flaky,
        settings=_settings(tiny_model_path, tiny_tokenizer),
        data=data,
        marker=str(tmp_path / "failed-once"),
    )
    tuner = ray_tune.Tuner(
        trainable,
        param_space={"learning_rate": 1e-3, "weight_decay": 0.0, "lora_r": 8},
        tune_config=ray_tune.TuneConfig(metric="eval_loss", mode="min", num_samples=1),
        run_config=ray_tune.RunConfig(
            storage_path=str(tmp_path),
            name="resume",
            failure_config=ray_tune.FailureConfig(max_failures=1),
            checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )
    result = tuner.fit()[0]
    assert (tmp_path / "failed-once").exists()
    assert result.error is None
    # Resumed from the step-10 checkpoint: the steps continue, they do not restart at zero.
    # The step-10 row may be missing: Ray's JSON logger copies result.json back from storage,
    # synced before that row, as the trial restarts (tests/tune/test_trial_logs.py; medtune's
    # sweeps keep it by saving at every checkpoint). Its checkpoint is never lost.
    assert list(result.metrics_dataframe["step"]) in ([5, 10, 15, 20], [5, 15, 20])
    assert result.metrics["step"] == 20


def _trained(config, *, settings, data, weights):
    """train_lora over the shared base stored for `config["store"]` (the format a sweep picks
    with `tune.sweep.shared_weights_format`)."""
    train_lora(config, settings=settings, data=data, weights=weights[config["store"]])


@pytest.mark.parametrize("precision, stores", [("fp32", ["fp32"]), ("bf16", ["fp32", "bf16"])])
def test_reported_loss_is_the_checkpoint_loss(
    ray_2_cpus, tmp_path, tiny_model_path, tiny_tokenizer, data, precision, stores
):
    """Each report's eval_loss is its checkpoint's. A bf16 trial also trains over the base's
    linear weights shared in bf16 (as a CPU sweep whose trials all compute in bf16 shares
    them): every report the same as over the fp32 base, bit for bit, including after the
    optimizer's steps (LoRA's init is not rounded)."""
    settings = _settings(tiny_model_path, tiny_tokenizer)
    settings = dataclasses.replace(
        settings, train=settings.train.model_copy(update={"precision": precision})
    )
    tuner = ray_tune.Tuner(
        ray_tune.with_parameters(
            _trained,
            settings=settings,
            data=data,
            weights={s: base_weights(tiny_model_path, compute=s) for s in stores},
        ),
        param_space={
            "learning_rate": 5e-3,
            "weight_decay": 0.01,
            "lora_r": 4,
            "store": ray_tune.grid_search(stores),
        },
        # One after the other in one trial process (about 5 CPU-s of imports fewer on the
        # suite's 2 cores); train_lora seeds each trial, so reuse changes no number.
        tune_config=ray_tune.TuneConfig(
            metric="eval_loss", mode="min", max_concurrent_trials=1, reuse_actors=True
        ),
        run_config=ray_tune.RunConfig(storage_path=str(tmp_path), name="plain", verbose=0),
    )
    results = {r.config["store"]: r for r in tuner.fit()}
    assert sorted(results) == sorted(stores)
    for result in results.values():
        assert result.error is None
        df = result.metrics_dataframe
        assert len(df) == 4
        assert df["eval_loss"].iloc[-1] < df["eval_loss"].iloc[0]  # it learns
        assert set(df["precision"]) == {precision}
        model = PeftModel.from_pretrained(load_model(tiny_model_path), result.checkpoint.path)
        with autocast(precision, "cpu"):  # the trial evaluates in the precision it trains in
            loss = answer_loss(model, data["validation"], 8, tiny_tokenizer.pad_token_id)
        assert loss == pytest.approx(result.metrics["eval_loss"], rel=1e-5)
    if "bf16" in results:
        reports = {
            s: r.metrics_dataframe[["step", "train_loss", "eval_loss"]].values.tolist()
            for s, r in results.items()
        }
        assert len(reports["fp32"]) == 4
        assert reports["bf16"] == reports["fp32"]


def _plasma_ranges() -> list[tuple[int, int]]:
    """Address ranges of this process's shared mappings of Ray's object store (plasma)."""
    ranges = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) >= 6 and "plasma" in fields[5] and fields[1].endswith("s"):
            lo, hi = (int(v, 16) for v in fields[0].split("-"))
            ranges.append((lo, hi))
    return ranges


def _probe(config, *, settings, weights):
    """Build a trial's model as train_lora does and report where its tensors live."""
    model = _lora_model(config, settings, weights, "fp32")
    ranges = _plasma_ranges()
    base = [p for n, p in model.named_parameters() if "lora_" not in n]
    inside = sum(any(lo <= p.data_ptr() < hi for lo, hi in ranges) for p in base)
    inner = model.get_base_model()
    ray_tune.report(
        {
            "base": len(base),
            "in_object_store": inside,
            "base_trainable": sum(p.requires_grad for p in base),
            "lora_trainable": sum(
                p.requires_grad for n, p in model.named_parameters() if "lora_" in n
            ),
            "tied": inner.lm_head.weight is inner.model.embed_tokens.weight,
        }
    )


def test_trial_base_weights_are_the_object_store_memory(
    ray_2_cpus, tmp_path, tiny_model_path, tiny_tokenizer
):
    tuner = ray_tune.Tuner(
        ray_tune.with_parameters(
            _probe,
            settings=_settings(tiny_model_path, tiny_tokenizer),
            weights=base_weights(tiny_model_path),
        ),
        param_space={"lora_r": 4},
        run_config=ray_tune.RunConfig(storage_path=str(tmp_path), name="probe", verbose=0),
    )
    m = tuner.fit()[0].metrics
    # Every frozen weight is a view of the shared object store mapping: no per-trial copy.
    assert m["base"] > 0 and m["in_object_store"] == m["base"]
    assert m["base_trainable"] == 0 and m["lora_trainable"] > 0
    assert m["tied"]


class _LayerCalls(TrainerCallback):
    """Counts the first decoder layer's attention calls in training (a hook inside the layer:
    transformers keeps hooks on the layer itself out of the recomputation)."""

    def __init__(self):
        self.calls = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def count(*_):
            self.calls += model.training  # evaluation (eval mode) is not counted

        decoder = model.get_base_model().model
        decoder.layers[0].self_attn.register_forward_hook(count)


def _counted(config, *, settings, data):
    settings = dataclasses.replace(
        settings,
        train=settings.train.model_copy(
            update={"activation_checkpointing": config["checkpointing"], "max_steps": 10}
        ),
    )
    counter = _LayerCalls()
    real = ray_tune.report

    def report(metrics, checkpoint=None):
        real({**metrics, "layer_calls": counter.calls}, checkpoint=checkpoint)

    with mock.patch.object(ray_tune, "report", report):
        train_lora(config, settings=settings, data=data, callbacks=(counter,))


def test_activation_checkpointing_recomputes_and_trains_the_same(
    ray_2_cpus, tmp_path, tiny_model_path, tiny_tokenizer, data
):
    tuner = ray_tune.Tuner(
        ray_tune.with_parameters(
            _counted, settings=_settings(tiny_model_path, tiny_tokenizer), data=data
        ),
        param_space={
            "learning_rate": 5e-3,
            "weight_decay": 0.01,
            "lora_r": 4,
            "checkpointing": ray_tune.grid_search([False, True]),
        },
        # One after the other in one trial process: the second trial starts no process of its
        # own (about 5 CPU-s of imports on the suite's 2 cores).
        tune_config=ray_tune.TuneConfig(
            metric="eval_loss", mode="min", max_concurrent_trials=1, reuse_actors=True
        ),
        run_config=ray_tune.RunConfig(storage_path=str(tmp_path), name="gc", verbose=0),
    )
    results = {r.config["checkpointing"]: r.metrics_dataframe for r in tuner.fit()}
    plain, recomputed = results[False], results[True]
    # 5 steps per report: once per step without checkpointing, twice with it (the forward
    # again in the backward pass).
    assert list(plain["layer_calls"]) == [5, 10]
    assert list(recomputed["layer_calls"]) == [10, 20]
    # The same training: recomputation replays LoRA dropout's random numbers.
    assert list(recomputed["eval_loss"]) == pytest.approx(list(plain["eval_loss"]), rel=1e-5)
    assert plain["eval_loss"].iloc[-1] < plain["eval_loss"].iloc[0]


def test_a_trial_model_is_built_without_upstream_warnings(tiny_model_path, tiny_tokenizer):
    """A trial's log carries only what the user can act on: PEFT's read of transformers'
    deprecated `is_gradient_checkpointing` is not one of them."""
    import warnings

    settings = _settings(tiny_model_path, tiny_tokenizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _lora_model({"lora_r": 4}, settings, None, "fp32")
    assert isinstance(model, PeftModel)
    assert [str(w.message) for w in caught if "checkpointing" in str(w.message)] == []


def test_a_trial_in_another_format_than_the_shared_base_loads_it_from_disk(
    tiny_model_path, tiny_tokenizer
):
    """A node whose `train.precision=auto` picks fp32 while the driver stored the linear
    weights for bf16 would train on rounded weights; it loads the base as saved instead."""
    settings = _settings(tiny_model_path, tiny_tokenizer)
    weights = base_weights(tiny_model_path, compute="bf16")

    def dtypes(precision):
        model = _lora_model({"lora_r": 4}, settings, weights, precision)
        return {p.dtype for n, p in model.named_parameters() if "lora_" not in n}

    assert dtypes("bf16") == {torch.bfloat16, torch.float32}  # the shared weights, as stored
    assert dtypes("fp32") == {torch.float32}
