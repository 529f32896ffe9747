from pathlib import Path

import pytest

from tune.config import ConfigError, SweepConfig, default_config_path, load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "tune" / "configs").glob("*.yaml")))
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, SweepConfig)


def test_default_sweep_is_the_documented_one():
    cfg = load_config()
    assert default_config_path().is_file()
    assert cfg.model.name == "smollm2-135m"
    assert cfg.data.source == "demo"
    assert cfg.search.num_samples >= 6
    assert cfg.scheduler.name == "asha"
    assert cfg.run.storage == "results"
    assert cfg.ray.address is None


def test_overrides_are_typed():
    cfg = load_config(
        None,
        [
            "train.max_steps=100",
            "search.num_samples=8",
            "resources.cpus_per_trial=0.5",
            "model.lora_target_modules=[q_proj, k_proj]",
            "ray.address=",
            "run.name=my-sweep.1",
        ],
    )
    assert cfg.train.max_steps == 100
    assert cfg.search.num_samples == 8
    assert cfg.resources.cpus_per_trial == 0.5
    assert cfg.model.lora_target_modules == ["q_proj", "k_proj"]
    assert cfg.ray.address is None
    assert cfg.run.name == "my-sweep.1"


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_config(
            None,
            ["train.max_steps=-1", "train.foo=1", "scheduler.name=hyperband", "data.source=x"],
        )
    problems = info.value.problems
    assert len(problems) == 4
    text = "\n".join(problems)
    assert "train.max_steps: got -1; input should be greater than 0" in text
    assert "train.foo: unknown key (got 1); valid keys here: max_steps" in text
    assert "scheduler.name: got 'hyperband'; input should be 'asha' or 'fifo'" in text
    assert "data.source: got 'x'" in text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.eval_every=50"], r"train.eval_every: got 50, more than train.max_steps=40"),
        (["scheduler.grace_period=5"], r"scheduler.grace_period: got 5 evaluations, but a trial"),
        (["data.source=medquad"], r"data.path: empty, but data.source=medquad reads from a path"),
        (["data.val_fraction=0.45", "data.test_fraction=0.45"], r"must stay below 0.9"),
        (["run.name=../escape"], r"run.name: got '../escape'; use letters, digits"),
        (["nosection=1"], r"override 'nosection=1': expected section.key=value"),
        (["train.max_steps"], r"expected section.key=value"),
        (["model=1"], r"expected section.key=value"),
        (["search.num_samples=0"], r"search.num_samples: got 0; input should be greater than or"),
        (["data.max_length=8"], r"data.max_length: got 8"),
        (["scheduler.reduction_factor=1"], r"scheduler.reduction_factor: got 1"),
        (["model.quantization=4bit"], r"model.quantization: got '4bit', but resources.gpus_per"),
        (["model.quantization=8bit"], r"model.quantization: got '8bit'; input should be"),
        (["train.precision=fp16"], r"train.precision: got 'fp16', but resources.gpus_per_t"),
        (["train.precision=fp8"], r"train.precision: got 'fp8'; input should be"),
    ],
)
def test_bad_values_name_key_value_and_rule(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_4bit_without_cuda_is_refused_before_ray_starts():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for machines without it")
    with pytest.raises(ConfigError, match=r"this machine has no CUDA GPU and ray.address is empty"):
        load_config(None, ["model.quantization=4bit", "resources.gpus_per_trial=1"])
    with pytest.raises(ConfigError, match=r"train.precision: got 'fp16', but this machine has no"):
        load_config(None, ["train.precision=fp16", "resources.gpus_per_trial=1"])


def test_bad_yaml_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"expected a mapping of sections"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"no such file"):
        load_config(tmp_path / "missing.yaml")


def test_run_name_defaults_to_a_timestamp():
    cfg = load_config().with_run_name()
    assert cfg.run.name.startswith("sweep-")


def test_4bit_without_bitsandbytes_is_refused_before_ray_starts():
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here; the refusal is for machines without it")
    with pytest.raises(ConfigError, match=r"bitsandbytes \(4-bit QLoRA\) is not installed; run"):
        load_config(None, ["model.quantization=4bit", "resources.gpus_per_trial=1"])
    # A cluster's nodes have their own packages: joined by address, it is not checked here.
    load_config(
        None,
        ["model.quantization=4bit", "resources.gpus_per_trial=1", "ray.address=auto"],
    )
