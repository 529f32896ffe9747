"""Bad input through the real `medtune` command: one line per problem, exit 2, nothing written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MEDTUNE = str(Path(sys.executable).parent / "medtune")


def run(args, cwd, env_extra=None, timeout=180):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [MEDTUNE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def snapshot(root: Path) -> dict:
    return (
        {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}
        if root.exists()
        else {}
    )


def assert_refused(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("medtune: error: ") for ln in lines), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.fixture
def workdir(tmp_path, model_cache):
    results = tmp_path / "results"
    (results / "earlier").mkdir(parents=True)
    (results / "earlier" / "keep.txt").write_text("an earlier sweep")
    return tmp_path


TINY = ["model.name=tiny-random"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["sweep", *TINY, "train.foo=1"], ["train.foo: unknown key; valid keys here:"]),
        (["sweep", *TINY, "train.max_steps=0"], ["train.max_steps: got 0; input should be"]),
        (
            [
                "sweep",
                *TINY,
                "train.max_steps=-5",
                "search.num_samples=0",
                "resources.cpus_per_trial=0",
            ],
            ["train.max_steps", "search.num_samples", "resources.cpus_per_trial"],
        ),
        (
            ["sweep", *TINY, "data.source=instruction", "data.path=/no/such/file.json"],
            ["data.path=/no/such/file.json: no such file or folder"],
        ),
        (
            ["sweep", *TINY, "search.space=no_such_space"],
            ["search.space=no_such_space: no such file and no shipped space"],
        ),
        (
            ["sweep", "model.name=no-such-org/no-such-model"],
            ["model.name=no-such-org/no-such-model: not cached and HF_HUB_OFFLINE is set"],
        ),
        (
            ["sweep", *TINY, "run.name=earlier"],
            ["run.name=earlier:", "already exists", "--overwrite"],
        ),
        (
            ["sweep", *TINY, "scheduler.grace_period=9"],
            ["scheduler.grace_period: got 9 evaluations"],
        ),
        (["export", "results/earlier"], ["not a medtune results folder (no medtune.yaml)"]),
        (["sweep", *TINY, "oops"], ["override 'oops': expected section.key=value"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    workdir, args, needles, monkeypatch, capsys
):
    # In-process through the console script's own `main`, to skip a Python start per case;
    # the subprocess tests below check the real executable's exit code and output.
    from tune.cli import main

    monkeypatch.chdir(workdir)
    before = snapshot(workdir / "results")
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("medtune: error: ") for ln in lines), err
    for needle in needles:
        assert needle in err, err
    assert snapshot(workdir / "results") == before


def test_overrides_may_come_between_options(workdir):
    proc = run(["sweep", "train.max_steps=0", "--no-export", "train.foo=1"], cwd=workdir)
    assert_refused(proc, "train.max_steps: got 0", "train.foo: unknown key")


def test_the_executable_exits_2_without_a_traceback(workdir):
    before = snapshot(workdir / "results")
    proc = run(["sweep", *TINY, "data.source=instruction", "data.path=/no/such.json"], cwd=workdir)
    assert_refused(proc, "data.path=/no/such.json: no such file or folder")
    assert snapshot(workdir / "results") == before


def test_data_without_a_usable_record(workdir):
    bad = workdir / "empty.json"
    bad.write_text(json.dumps([{"instruction": "x", "input": "q?", "output": " "}] * 3))
    proc = run(["sweep", *TINY, "data.source=instruction", f"data.path={bad}"], cwd=workdir)
    assert_refused(proc, f"data.path={bad}: no usable question/answer record", "3 empty")
    assert not (workdir / "results" / "sweep").exists()
    assert sorted(p.name for p in (workdir / "results").iterdir()) == ["earlier"]


def test_bad_yaml_config_file(workdir):
    cfg = workdir / "bad.yaml"
    cfg.write_text("train: {max_steps: [1, 2}\n")
    assert_refused(run(["sweep", "--config", str(cfg)], cwd=workdir), "not valid YAML")


def test_debug_shows_the_traceback(workdir):
    proc = run(["sweep", "--debug", "train.foo=1"], cwd=workdir)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_help_lists_the_commands(workdir):
    proc = run(["--help"], cwd=workdir)
    assert proc.returncode == 0
    assert "sweep" in proc.stdout and "export" in proc.stdout
