"""The trainable inside a real Ray Tune run: reports, checkpoints, resume after a failure."""

import os
from unittest import mock

import pytest
from peft import PeftModel
from ray import tune as ray_tune

from trainables.config import DataConfig, ModelConfig, TrainConfig
from trainables.data import load_records, split_records
from trainables.evaluation import answer_loss
from trainables.models import load_model
from trainables.prompts import encode_records
from trainables.trainable import TrialSettings, train_lora

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
    # The step-10 result itself may be lost with the actor (it died right after reporting);
    # its checkpoint is not.
    assert list(result.metrics_dataframe["step"]) in ([5, 10, 15, 20], [5, 15, 20])
    assert result.metrics["step"] == 20


def test_reported_loss_is_the_checkpoint_loss(
    ray_2_cpus, tmp_path, tiny_model_path, tiny_tokenizer, data
):
    tuner = ray_tune.Tuner(
        ray_tune.with_parameters(
            train_lora, settings=_settings(tiny_model_path, tiny_tokenizer), data=data
        ),
        param_space={"learning_rate": 5e-3, "weight_decay": 0.01, "lora_r": 4},
        tune_config=ray_tune.TuneConfig(metric="eval_loss", mode="min", num_samples=1),
        run_config=ray_tune.RunConfig(storage_path=str(tmp_path), name="plain", verbose=0),
    )
    result = tuner.fit()[0]
    df = result.metrics_dataframe
    assert len(df) == 4
    assert df["eval_loss"].iloc[-1] < df["eval_loss"].iloc[0]  # it learns
    model = PeftModel.from_pretrained(load_model(tiny_model_path), result.checkpoint.path)
    loss = answer_loss(model, data["validation"], 8, tiny_tokenizer.pad_token_id)
    assert loss == pytest.approx(result.metrics["eval_loss"], rel=1e-5)
