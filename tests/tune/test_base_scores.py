"""The base model's test scores kept between exports (tune/base_scores.py)."""

import os
import shutil

from trainables.data import Record
from tune.base_scores import base_scores_key, read_base_scores, write_base_scores


def _records(*questions):
    return [Record(id=q, question=q, answer="a", group=q, source="t") for q in questions]


def test_the_key_changes_with_everything_the_scores_depend_on(tiny_model_path, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_path, model)
    samples = _records("What is gout?")
    settings = {"batch_size": 8, "max_new_tokens": 64, "decisions": False}
    key = base_scores_key(str(model), "tokens-a", samples, settings)
    assert key == base_scores_key(str(model), "tokens-a", samples, dict(settings))
    others = [
        base_scores_key(str(model), "tokens-b", samples, settings),  # another test split
        base_scores_key(str(model), "tokens-a", _records("What is acne?"), settings),
        base_scores_key(str(model), "tokens-a", samples, {**settings, "max_new_tokens": 32}),
        base_scores_key(tiny_model_path, "tokens-a", samples, settings),  # another folder
    ]
    weights = model / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # replaced
    others.append(base_scores_key(str(model), "tokens-a", samples, settings))
    config = model / "config.json"
    config.write_text(config.read_text().replace('"rms_norm_eps"', '"rms_norm_eps" ', 1))
    others.append(base_scores_key(str(model), "tokens-a", samples, settings))
    assert len({key, *others}) == len(others) + 1


def test_scores_are_kept_and_read_back(tmp_path):
    scores = {"metrics": {"test_loss": 2.5}, "answers": ["Gout is ..."]}
    assert read_base_scores(tmp_path, "k") is None
    write_base_scores(tmp_path / "base_scores", "k", scores)
    kept = read_base_scores(tmp_path / "base_scores", "k")
    assert {k: kept[k] for k in scores} == scores and kept["scored_at"]
    (tmp_path / "base_scores" / "k.json").write_text("{half a file")
    assert read_base_scores(tmp_path / "base_scores", "k") is None  # computed again
    assert [p.name for p in (tmp_path / "base_scores").iterdir()] == ["k.json"]
