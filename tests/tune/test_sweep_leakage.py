"""A sweep refuses a test split that shares a group or a question with train, unless told."""

from __future__ import annotations

from io import StringIO

import pytest
from rich.console import Console

from tests.trainables.test_sources import write_pubmedqa
from trainables.data import DataError
from tune.config import load_config
from tune.sweep import prepare_sweep


def _config(tmp_path, *overrides):
    # Fold 1 trains on item 21004, which asks verbatim what official test item 21000 asks.
    path = write_pubmedqa(tmp_path / "pubmedqa", leak=True)
    return load_config(
        None,
        [
            "model.name=tiny-random",
            "data.source=pubmedqa",
            f"data.path={path}",
            f"run.storage={tmp_path / 'results'}",
            "run.name=leak",
            *overrides,
        ],
    )


def _console():
    out = StringIO()
    return Console(file=out, width=300), out


def test_sweep_refuses_a_test_question_in_train(tmp_path, model_cache):
    console, _ = _console()
    with pytest.raises(DataError) as info:
        prepare_sweep(_config(tmp_path, "data.fold=1"), console)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "data: the test split shares 0 group(s) and 1 normalized question(s) with train "
        "(e.g. 'does statin therapy lower stroke risk after transient ischaemic attack')"
    )
    assert message.endswith("or pass data.allow_leakage=true")
    assert not (tmp_path / "results").exists()


def test_allow_leakage_runs_with_a_loud_warning(tmp_path, model_cache):
    console, out = _console()
    prep = prepare_sweep(_config(tmp_path, "data.fold=1", "data.allow_leakage=true"), console)
    assert "WARNING: data leakage: the test split shares 0 group(s) and 1" in out.getvalue()
    assert "test metrics will overstate the model (data.allow_leakage=true)" in out.getvalue()
    assert [r.id for r in prep.splits["test"]] == ["21000", "21001", "21002", "21003"]


def test_without_a_fold_the_copy_joins_the_test_item(tmp_path, model_cache):
    console, out = _console()
    prep = prepare_sweep(_config(tmp_path), console)
    assert "WARNING" not in out.getvalue()
    # Free items that ask what a test item asks are tested with it, never trained on.
    assert {r.id for r in prep.splits["test"]} == {"21000", "21001", "21002", "21003", "21004"}
