"""`medtune list`: the sweeps of a results folder, through the real executable, on the suite's
shared end-to-end sweep (finished and exported) beside a folder whose config is broken."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tune.conftest import MAX_STEPS, SAMPLES

MEDTUNE = str(Path(sys.executable).parent / "medtune")

pytestmark = pytest.mark.slow  # the shared sweep


def medtune_list(*args, cwd, env=None):
    return subprocess.run(
        [MEDTUNE, "list", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def results(sweep, tmp_path):
    """A results folder holding the shared sweep (a link: it is not to be touched) and a
    sweep folder whose medtune.yaml no longer parses."""
    root = tmp_path / "results"
    root.mkdir()
    (root / "e2e").symlink_to(sweep[0], target_is_directory=True)
    (root / "broken").mkdir()
    (root / "broken" / "medtune.yaml").write_text("model: [\n")
    (root / "notes").mkdir()  # not a sweep: left out
    return root, sweep[0]


def test_each_sweep_is_one_row_with_its_status_best_and_test_metric(results, tmp_path):
    root, out = results
    summary = json.loads((out / "sweep_summary.json").read_text())
    metrics = json.loads((out / "export" / "metrics.json").read_text())

    proc = medtune_list(str(root), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"e2e", "broken"}
    row = rows["e2e"]
    assert row["status"] == "finished" and row["model"] == "tiny-random"
    assert row["trials"] == row["ended"] == SAMPLES and row["errored"] == 0
    assert row["steps_trained"] == summary["steps_trained"]
    assert row["step_budget"] == SAMPLES * MAX_STEPS
    assert row["best_trial"] == summary["best"]["trial_id"]
    assert row["best"] == pytest.approx(summary["best"]["best_eval_loss"])
    assert row["test"] == {
        "metric": "test_loss",
        "tuned": metrics["tuned"]["test_loss"],
        "base": metrics["base"]["test_loss"],
        "of_trials": SAMPLES,
    }
    assert "medtune.yaml" in rows["broken"]["error"]

    table = medtune_list(str(root), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    (line,) = [ln for ln in table.stdout.splitlines() if ln.startswith("e2e ")]
    assert "finished" in line and f"{SAMPLES}/{SAMPLES}" in line
    assert f"eval_loss {summary['best']['best_eval_loss']:.4f}" in line
    assert f"test_loss {metrics['tuned']['test_loss']:.4f}" in line
    assert "exported from" not in line  # exported with every trial the sweep has
    assert any(
        ln.startswith("broken: ") and "medtune.yaml" in ln for ln in table.stdout.splitlines()
    )


def test_a_sweep_folder_itself_lists_only_that_sweep(results, tmp_path):
    _, out = results
    proc = medtune_list(str(out), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["name"] for r in json.loads(proc.stdout)] == ["e2e"]


def test_a_storage_uri_lists_its_sweeps_from_copies_without_checkpoints(results, tmp_path):
    """What `medtune list s3://bucket/prefix` does, through a file:// URI: the same pyarrow
    code as s3:// (tests/tune/test_storage.py lists a real S3 API's bucket)."""
    root, out = results
    uri = root.as_uri()
    env = {"MEDTUNE_CACHE": str(tmp_path / "cache")}
    here = json.loads(medtune_list(str(root), "--json", cwd=tmp_path).stdout)
    proc = medtune_list(uri, "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"e2e", "broken"}
    assert rows["e2e"]["folder"] == f"{uri}/e2e"  # what dashboard, report and export take
    assert rows["broken"]["folder"] == f"{uri}/broken" and "medtune.yaml" in rows["broken"]["error"]
    local = next(r for r in here if r["name"] == "e2e")
    for key in ("status", "trials", "ended", "steps_trained", "best", "best_trial", "test"):
        assert rows["e2e"][key] == local[key], key
    (copy,) = (tmp_path / "cache" / "sweeps").iterdir()  # the dashboard's copy of the URI
    assert copy.name.startswith("results-")
    assert sorted(p.name for p in copy.iterdir()) == ["broken", "e2e"]
    assert list(out.rglob("checkpoint_*")) and not list(copy.rglob("checkpoint_*"))

    one = medtune_list(f"{uri}/e2e", cwd=tmp_path, env=env)  # a sweep's own URI: that sweep
    assert one.returncode == 0, one.stderr
    assert f"Sweeps in {uri}/e2e" in one.stdout
    assert [ln.split()[0] for ln in one.stdout.splitlines()[2:]] == ["e2e"]

    (root / "e2e").unlink()  # a sweep gone from the storage goes from the copy
    proc = medtune_list(uri, "--json", cwd=tmp_path, env=env)
    assert [r["name"] for r in json.loads(proc.stdout)] == ["broken"]
    assert sorted(p.name for p in copy.iterdir()) == ["broken"]

    nothing = medtune_list(f"{uri}/nope", cwd=tmp_path, env=env)
    assert nothing.returncode == 2
    assert nothing.stderr.startswith(f"medtune: error: {uri}/nope: nothing there; ")


def test_names_and_paths_are_shown_as_they_are_not_as_markup(sweep, tmp_path):
    """Brackets in a folder's name are text: rich once read "[old]" as a style and dropped it."""
    root = tmp_path / "runs[old]"
    root.mkdir()
    (root / "e2e[v2]").symlink_to(sweep[0], target_is_directory=True)
    table = medtune_list(str(root), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert f"Sweeps in {root}" in table.stdout
    assert any(ln.startswith("e2e[v2] ") for ln in table.stdout.splitlines())

    empty = tmp_path / "empty[b]"
    empty.mkdir()
    none = medtune_list(str(empty), cwd=tmp_path)
    assert none.returncode == 0, none.stderr
    assert none.stdout.startswith(f"No sweeps in {empty} ")


def test_a_decision_sweep_shows_the_exported_accuracy():
    """PubMedQA's decision task: the validation metric is eval_accuracy, and export names the
    matching test score `accuracy` (next to `macro_f1`)."""
    from rich.console import Console

    from tune.sweep_list import _table, sweep_row
    from tune.sweep_state import Evaluation, SweepState, TrialState

    trial = TrialState("a1", "completed", {}, [Evaluation(10, 0.55, 1.2, None, 3.0)])
    state = SweepState(
        **dict.fromkeys(["name", "folder", "model", "data_source", "scheduler"], "x"),
        metric="eval_accuracy",
        mode="max",
        max_steps=10,
        eval_every=10,
        num_samples=1,
        rung_steps=[],
        space={},
        trials=[trial],
        finished=True,
        interrupted=False,
        driver_gone=False,
        updated=0.0,
        export={
            "base": {"test_loss": 2.0, "accuracy": 0.4, "macro_f1": 0.3},
            "tuned": {"test_loss": 1.5, "accuracy": 0.6, "macro_f1": 0.5},
        },
    )
    row = sweep_row(state)
    assert row["best"] == 0.55 and row["best_trial"] == "a1"
    assert row["test"] == {"metric": "accuracy", "tuned": 0.6, "base": 0.4, "of_trials": None}

    # Exported when the sweep had 1 trial; extended to 3 since: the row says so.
    state.export["sweep_trials"], state.num_samples = 1, 3
    shown = Console(record=True, width=300)
    shown.print(_table([sweep_row(state)], Path("results")))
    assert "accuracy 0.6000 (base 0.4000), exported from 1 of 3 trials" in shown.export_text()
