"""Property tests: any config or table either loads or fails with one of medtune's clear errors.

Hypothesis writes random YAML documents, `key=value` overrides and CSV / JSON / JSON Lines
bytes; the loaders may accept them or raise a `tune.errors.USER_ERRORS` error, nothing else.
"""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainables.config import DataConfig
from trainables.data import load_records
from tune.config import load_config
from tune.errors import USER_ERRORS

FAST = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
KEYS = [
    "train.max_steps",
    "train.eval_every",
    "search.num_samples",
    "scheduler.grace_period",
    "search.metric",
    "data.source",
    "run.name",
    "model.name",
    "data.val_fraction",
    "foo.bar",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=20),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from([k.split(".")[-1] for k in KEYS] + ["train", "search"]),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@FAST
@given(document=documents)
def test_config_files_load_or_fail_clearly(tmp_path, document):
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        load_config(path, [])
    except USER_ERRORS:
        pass


@FAST
@given(raw=st.binary(max_size=200))
def test_config_bytes_load_or_fail_clearly(tmp_path, raw):
    path = tmp_path / "random.yaml"
    path.write_bytes(raw)
    try:
        load_config(path, [])
    except USER_ERRORS:
        pass


@FAST
@given(
    overrides=st.lists(
        st.one_of(
            st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=12)),
            st.text(max_size=20),
        ),
        max_size=4,
    )
)
def test_overrides_load_or_fail_clearly(overrides):
    try:
        load_config(None, overrides)
    except USER_ERRORS:
        pass


rows = st.lists(
    st.dictionaries(st.sampled_from(["question", "answer", "q", "group"]), scalars, max_size=4),
    max_size=6,
)


@FAST
@given(
    suffix=st.sampled_from([".csv", ".json", ".jsonl"]),
    content=st.one_of(
        st.binary(max_size=300),
        rows.map(lambda r: json.dumps(r).encode()),
        rows.map(lambda r: "\n".join(json.dumps(x) for x in r).encode()),
        rows.map(
            lambda r: (
                "question,answer\n"
                + "\n".join(f"{x.get('question', '')},{x.get('answer', '')}" for x in r)
            )
        ).map(lambda t: t.encode("utf-8", "surrogatepass")),
    ),
)
def test_tables_load_or_fail_clearly(tmp_path, suffix, content):
    path = tmp_path / f"table{suffix}"
    path.write_bytes(content)
    try:
        records, _ = load_records(DataConfig(source="table", path=str(path)))
    except USER_ERRORS:
        return
    assert records and all(r.question.strip() and r.answer.strip() for r in records)
