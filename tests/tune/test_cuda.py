"""Sweeps on a CUDA GPU: GPU fractions, the precision a GPU trial picks, fp16 and 4-bit QLoRA
through to the export. Skipped without a CUDA GPU (CI has none); run on a GPU machine as
`make test-gpu` (README, "On a GPU")."""

import json

import pytest
import ray
import torch
from rich.console import Console
from safetensors import safe_open

from tests.conftest import read_progress
from trainables.precision import resolve_precision
from tune.config import load_config
from tune.export import export_best
from tune.sweep import prepare_sweep, run_sweep

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
STEPS = 40


@pytest.fixture(scope="module")
def ray_one_gpu():
    """A local Ray with this machine's first GPU and 4 CPUs, for this module's sweeps."""
    ray.shutdown()
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False)
    yield
    ray.shutdown()


def _sweep(tmp_path, name, *overrides, steps=STEPS):
    cfg = load_config(
        None,
        [
            "model.name=tiny-random",
            "data.max_records=120",
            "scheduler.name=fifo",
            f"train.max_steps={steps}",
            f"train.eval_every={steps // 4}",
            "train.per_device_batch_size=8",
            "ray.dashboard=false",
            f"run.name={name}",
            f"run.storage={tmp_path}",
            *overrides,
        ],
    )
    summary = run_sweep(prepare_sweep(cfg, Console(quiet=True)), Console(quiet=True))
    frames = [read_progress(p) for p in sorted((tmp_path / name).glob("trial_*/progress.csv"))]
    return summary, frames


def _trained(summary, frames, samples, steps=STEPS):
    assert summary["errored"] == 0, [t["error"] for t in summary["trials"]]
    assert len(frames) == samples
    for df in frames:
        assert list(df["step"]) == [steps // 4 * i for i in range(1, 5)]
        assert df["eval_loss"].notna().all() and (df["eval_loss"] < 20).all()
        assert df["eval_loss"].iloc[-1] < df["eval_loss"].iloc[0]  # it learned


def test_half_a_gpu_each_runs_two_trials_on_one_gpu_in_its_best_precision(
    ray_one_gpu, tmp_path, model_cache
):
    summary, frames = _sweep(
        tmp_path,
        "halves",
        "search.num_samples=2",
        "resources.gpus_per_trial=0.5",
        "resources.cpus_per_trial=1",
        "train.precision=auto",
        # An actor each, started together: a reused actor would run them one after the other
        # when a trial ends before the second actor has started.
        "run.reuse_actors=false",
        steps=800,
    )
    _trained(summary, frames, 2, steps=800)
    best = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    for df in frames:
        assert set(df["device"]) == {torch.cuda.get_device_name(0)}
        assert set(df["precision"]) == {best}
    # The machine's one GPU held both trials at once: their running times overlap.
    spans = [
        (df["timestamp"].iloc[-1] - df["time_total_s"].iloc[-1], df["timestamp"].iloc[-1])
        for df in frames
    ]
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, spans


def test_a_trial_given_no_gpu_trains_on_the_cpu(ray_one_gpu, tmp_path, model_cache):
    # Ray 2.60 leaves the GPU visible to such a trial; the trial must not take it anyway.
    summary, frames = _sweep(
        tmp_path,
        "cpu",
        "search.num_samples=1",
        "resources.gpus_per_trial=0",
        "train.precision=auto",
    )
    _trained(summary, frames, 1)
    assert set(frames[0]["device"]) == {"CPU"}
    assert set(frames[0]["precision"]) == {resolve_precision("auto", cuda=False)}


def test_fp16_trains_with_the_loss_scaler(ray_one_gpu, tmp_path, model_cache):
    summary, frames = _sweep(
        tmp_path,
        "fp16",
        "search.num_samples=1",
        "resources.gpus_per_trial=1",
        "train.precision=fp16",
    )
    _trained(summary, frames, 1)
    assert set(frames[0]["precision"]) == {"fp16"}


def test_qlora_sweep_exports_a_full_precision_merged_model(ray_one_gpu, tmp_path, model_cache):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs `pip install bitsandbytes`")
    summary, frames = _sweep(
        tmp_path,
        "qlora",
        "search.num_samples=2",
        "resources.gpus_per_trial=0.5",
        "model.quantization=4bit",
        "export.confirm_top_k=1",
        "export.generate_samples=2",
        "export.max_new_tokens=8",
    )
    _trained(summary, frames, 2)
    metrics = export_best(tmp_path / "qlora", Console(quiet=True))

    export = tmp_path / "qlora" / "export"
    config = json.loads((export / "config.json").read_text())
    assert "quantization_config" not in config  # merged into the full-precision base
    with safe_open(str(export / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float32}
    for side in ("base", "tuned"):
        assert 0 < metrics[side]["test_loss"] < 20
    assert metrics["tuned"]["test_loss"] < metrics["base"]["test_loss"]
