"""Tokenized splits: the one-pass encoding equals `encode_records`, and the cache on disk
returns the same tokens without a tokenizer run, missing whenever anything that changes them
changes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.trainables.test_sources import write_pubmedqa
from trainables.config import DataConfig
from trainables.data import load_records, split_records
from trainables.prompts import encode_records
from trainables.tokenized import encode_split, encode_split_cached


def _splits(tmp_path, source):
    if source == "pubmedqa":
        path = write_pubmedqa(tmp_path / "pubmedqa")
        cfg = DataConfig(source="pubmedqa", path=str(path), task="long_answer")
    else:
        cfg = DataConfig(source="demo")
    records, _ = load_records(cfg)
    return split_records(records, val_fraction=0.1, test_fraction=0.1, seed=0)


@pytest.mark.parametrize(
    ("source", "max_length", "cut"),
    [
        ("pubmedqa", 40, "too_long"),
        ("pubmedqa", 128, "context_cut"),
        ("demo", 64, "truncated"),
        ("demo", 256, None),
    ],
)
def test_one_pass_encoding_equals_encode_records(tmp_path, tiny_tokenizer, source, max_length, cut):
    seen = {"truncated": 0, "too_long": 0, "context_cut": 0}
    for name, records in _splits(tmp_path, source).items():
        examples, stats = encode_records(tiny_tokenizer, records, max_length, "Be brief.")
        split = encode_split(tiny_tokenizer, records, max_length, "Be brief.")
        assert split.examples == examples, name
        assert (split.truncated, split.too_long) == (stats["truncated"], stats["too_long"]), name
        assert len(split.lengths) == len(records)
        assert all(len(ex["input_ids"]) <= max_length for ex in split.examples)
        for key in seen:
            seen[key] += getattr(split, key)
    # Each case takes the branch it is named for: drop, shortened context, cut answer, none.
    assert {k for k, n in seen.items() if n} >= ({cut} if cut else set())
    assert cut or not any(seen.values())


def test_second_call_reads_the_cache_file(tmp_path, tiny_tokenizer):
    records = _splits(tmp_path, "pubmedqa")["train"]
    cache = tmp_path / "tokens"
    kwargs = {"max_length": 48, "system_prompt": None, "cache_dir": cache}
    first = encode_split_cached(tiny_tokenizer, records, **kwargs)
    assert not first.from_cache
    files = list(cache.glob("*.npz"))
    assert [str(f) for f in files] == [first.cache_file]  # no temporary file left behind

    second = encode_split_cached(tiny_tokenizer, records, **kwargs)
    assert second.from_cache and second.cache_file == first.cache_file
    assert second.examples == first.examples and second.lengths == first.lengths
    assert (second.truncated, second.context_cut, second.too_long) == (
        first.truncated,
        first.context_cut,
        first.too_long,
    )

    # What the cache returns is what the file holds: a cut-off file is a miss, rewritten.
    path = files[0]
    path.write_bytes(path.read_bytes()[:100])
    again = encode_split_cached(tiny_tokenizer, records, **kwargs)
    assert not again.from_cache and again.examples == first.examples
    assert encode_split_cached(tiny_tokenizer, records, **kwargs).from_cache


@pytest.mark.parametrize(
    "change", ["max_length", "system_prompt", "answer", "order", "chat_template"]
)
def test_anything_that_changes_the_tokens_misses(tmp_path, tiny_tokenizer, change):
    records = _splits(tmp_path, "pubmedqa")["train"]
    cache = tmp_path / "tokens"
    kwargs = {"max_length": 48, "system_prompt": None, "cache_dir": cache}
    base = encode_split_cached(tiny_tokenizer, records, **kwargs)
    tokenizer = tiny_tokenizer
    if change == "max_length":
        kwargs["max_length"] = 64
    elif change == "system_prompt":
        kwargs["system_prompt"] = "Answer as a clinician."
    elif change == "answer":
        records = [replace(records[0], answer=records[0].answer + " Really.")] + records[1:]
    elif change == "order":
        records = records[::-1]
    else:
        tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
        tokenizer.pad_token = tokenizer.eos_token
        tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    other = encode_split_cached(tokenizer, records, **kwargs)
    assert not other.from_cache and other.cache_file != base.cache_file
    assert (
        other.examples
        == encode_records(tokenizer, records, kwargs["max_length"], kwargs["system_prompt"])[0]
    )
    assert len(list(cache.glob("*.npz"))) == 2
