import json

import pytest

from tests.conftest import shared_data
from trainables.config import DataConfig
from trainables.data import (
    DataError,
    Record,
    fingerprint,
    load_records,
    read_jsonl,
    split_records,
    write_jsonl,
)


def _split(records, seed=0):
    return split_records(records, val_fraction=0.1, test_fraction=0.1, seed=seed)


def test_demo_set_is_big_clean_and_grouped_by_topic():
    records, report = load_records(DataConfig(source="demo"))
    assert len(records) >= 200
    assert report.dropped == {}
    assert all(r.question and r.answer and r.group for r in records)
    assert len({r.group for r in records}) >= 40
    assert all(r.source == "demo" for r in records)


def test_split_keeps_every_group_in_one_split_and_is_seeded():
    records, _ = load_records(DataConfig(source="demo"))
    splits = _split(records)
    groups = {name: {r.group for r in rs} for name, rs in splits.items()}
    assert not groups["train"] & groups["validation"]
    assert not groups["train"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    assert sum(len(s) for s in splits.values()) == len(records)
    assert 0.05 * len(records) <= len(splits["test"]) <= 0.2 * len(records)
    again = _split(records)
    assert [r.id for r in again["test"]] == [r.id for r in splits["test"]]
    other = _split(records, seed=1)
    assert [r.id for r in other["test"]] != [r.id for r in splits["test"]]


def test_split_needs_three_groups():
    recs = [
        Record(id=str(i), question=f"q{i}", answer="a", group="g", source="t") for i in range(9)
    ]
    with pytest.raises(DataError, match=r"1 group\(s\) in 9 records; .* needs at least 3 groups"):
        _split(recs)


def test_max_records_keeps_whole_groups():
    records, _ = load_records(DataConfig(source="demo", max_records=50))
    full, _ = load_records(DataConfig(source="demo"))
    sizes = {}
    for r in full:
        sizes[r.group] = sizes.get(r.group, 0) + 1
    assert 50 <= len(records) < 56
    for g in {r.group for r in records}:
        assert sum(r.group == g for r in records) == sizes[g]


def test_records_round_trip_and_fingerprint(tmp_path):
    records, _ = load_records(DataConfig(source="demo", max_records=20))
    write_jsonl(records, tmp_path / "r.jsonl")
    assert read_jsonl(tmp_path / "r.jsonl") == records
    assert fingerprint(records) == fingerprint(read_jsonl(tmp_path / "r.jsonl"))
    assert fingerprint(records) != fingerprint(records[1:])


# -- instruction sets ------------------------------------------------------------------------


def _instruction_rows():
    return [
        {
            "instruction": "Answer this question truthfully",
            "input": "What is gout?",
            "output": "A form of arthritis.",
        },
        {
            "instruction": "Answer this question truthfully",
            "input": "What is gout ?",
            "output": "A form of arthritis.",
        },  # duplicate once normalized
        {
            "instruction": "Answer this question truthfully",
            "input": "What is acne?",
            "output": "   ",
        },  # empty answer
        {"instruction": "Explain what a fever is.", "input": "", "output": "A raised temperature."},
    ]


@pytest.mark.parametrize("form", ["list", "lines"])
def test_instruction_json_list_and_lines(tmp_path, form):
    path = tmp_path / "data.json"
    rows = _instruction_rows()
    if form == "list":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records, report = load_records(DataConfig(source="instruction", path=str(path)))
    assert report.read == 4
    assert report.dropped == {"duplicate": 1, "empty": 1}
    assert [r.question for r in records] == ["What is gout?", "Explain what a fever is."]
    assert records[0].system == "Answer this question truthfully"
    assert records[1].system is None  # no input: the instruction is the question
    assert records[0].group == "what is gout"


def test_wikidoc_upstream_file():
    path = shared_data("wikidoc", "medical_meadow_small.json")
    records, report = load_records(DataConfig(source="instruction", path=str(path)))
    assert report.read == 5942
    # README: 92 exact duplicates; normalizing the question's case and punctuation finds no
    # more than a handful beyond those.
    assert 92 <= report.dropped["duplicate"] <= 110
    assert len(records) == report.kept
    lines = shared_data("wikidoc", "wikidoc_patient_information.jsonl")
    assert sum(1 for _ in open(lines)) == 5942


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00bad", r"not UTF-8 text"),
        (b'[{"instruction": "x", "input": "y", "output": "z"', r"not a JSON list or JSON Lines"),
        (b'{"instruction": "x"}\n', r"row 0 is not an object with 'instruction', 'input' and"),
        (b'[{"instruction": "q", "input": "", "output": ""}]', r"no usable question/answer record"),
    ],
)
def test_bad_instruction_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_records(DataConfig(source="instruction", path=str(path)))
    assert str(path) in str(info.value)


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DataError, match=rf"data.path={missing}: no such file or folder"):
        load_records(DataConfig(source="instruction", path=str(missing)))
    with pytest.raises(DataError, match=r"data.path: empty, but data.source=medquad"):
        load_records(DataConfig(source="medquad"))


# -- MedQuAD ---------------------------------------------------------------------------------


def test_medquad_xml_sample_matches_reference_conversion():
    folder = shared_data("medquad", "xml_sample")
    expected = [
        json.loads(line)
        for line in open(shared_data("medquad", "xml_sample_expected.jsonl"), encoding="utf-8")
    ]
    records, report = load_records(DataConfig(source="medquad", path=str(folder)))
    got = {r.id: r for r in records}
    assert len(expected) == 129
    for e in expected:
        if e["id"] not in got:
            continue
        r = got[e["id"]]
        assert (r.question, r.answer) == (e["question"], e["answer"]), e["id"]
        assert r.group == e["focus"].lower()
        assert r.source == f"medquad/{e['source']}"
    # The reference keeps exact duplicates; cleaning drops them and says so.
    missing = [e for e in expected if e["id"] not in got]
    assert len(missing) == report.dropped["duplicate"] == 1
    kept_pairs = {(r.question, r.answer) for r in records}
    assert all((e["question"], e["answer"]) in kept_pairs for e in missing)
    assert report.dropped["empty"] == report.read - 129
    # Every schema variant is in the sample: <Document>, <DiseaseFile>, lower-case <doc>.
    assert {"CDC_0000397-1", "NINDS_0000007-1", "GARD_0000004-1"} <= set(got)


@pytest.mark.slow
def test_medquad_whole_tree_from_its_archive():
    archive = shared_data("medquad", "MedQuAD-xml.tar.gz")
    records, report = load_records(DataConfig(source="medquad", path=str(archive)))
    # README: 16,423 pairs have a non-empty answer; exact duplicates among them are dropped.
    assert report.read - report.dropped["empty"] == 16423
    assert 40 <= report.dropped["duplicate"] <= 60
    splits = _split(records)
    focus = {name: {r.group for r in rs} for name, rs in splits.items()}
    assert not focus["train"] & focus["test"]


def test_medquad_unknown_root_and_broken_xml(tmp_path):
    (tmp_path / "a.xml").write_text("<Foo><Bar/></Foo>")
    with pytest.raises(DataError, match=r"a.xml: unknown MedQuAD root element <Foo>; expected"):
        load_records(DataConfig(source="medquad", path=str(tmp_path)))
    (tmp_path / "a.xml").write_text("<Document><QAPairs>")
    with pytest.raises(DataError, match=r"a.xml: not well-formed XML"):
        load_records(DataConfig(source="medquad", path=str(tmp_path)))


def test_medquad_folder_without_xml(tmp_path):
    with pytest.raises(DataError, match=r"no .xml files found"):
        load_records(DataConfig(source="medquad", path=str(tmp_path)))


# -- splits a source fixes, groups merged by question ----------------------------------------


def _rec(i, group=None, split=None, question=None):
    return Record(
        id=str(i),
        question=question or f"question number {i}",
        answer="a",
        group=group or f"g{i}",
        source="t",
        split=split,
    )


def test_split_keeps_what_the_source_fixed_and_splits_the_rest():
    records = [_rec(i, split="test") for i in range(5)] + [_rec(i) for i in range(5, 25)]
    splits = _split(records)
    assert [r.id for r in splits["test"]] == ["0", "1", "2", "3", "4"]
    # validation is 10% of the 20 records the source left free
    assert len(splits["validation"]) == 2 and len(splits["train"]) == 18
    fixed = [_rec(i, split=["train", "validation", "test"][i % 3]) for i in range(9)]
    assert {n: [r.id for r in s] for n, s in _split(fixed).items()} == {
        "train": ["0", "3", "6"],
        "validation": ["1", "4", "7"],
        "test": ["2", "5", "8"],
    }
    with pytest.raises(DataError, match=r"1 group\(s\) in 1 records; .* needs at least 2 groups"):
        _split([_rec(0, split="test"), _rec(1)])


def test_split_merges_groups_that_share_a_question():
    # MedQuAD spells one focus two ways ('alpha thalassemia', 'alpha-thalassemia') and asks
    # the same question under both: they must not land in two splits.
    twins = [
        _rec("a", group="alpha thalassemia", question="What is (are) alpha thalassemia ?"),
        _rec("b", group="alpha-thalassemia", question="What is (are) Alpha-thalassemia?"),
    ]
    records = twins + [_rec(i) for i in range(30)]
    for seed in range(10):
        where = {r.id: name for name, rs in _split(records, seed).items() for r in rs}
        assert where["a"] == where["b"]
    # A free record asking what a fixed test record asks goes to test with it.
    pulled = _split([_rec(0, split="test", question="Q?"), _rec(1, question="q"), *records])
    assert {r.id for r in pulled["test"]} == {"0", "1"}


def test_fingerprint_of_records_without_the_new_fields_is_unchanged(tmp_path):
    import hashlib
    from dataclasses import replace

    r = Record(id="1", question="q", answer="a", group="g", source="s")
    before = {"id": "1", "question": "q", "answer": "a", "group": "g", "source": "s"}
    line = json.dumps(before | {"context": None, "system": None}, sort_keys=True) + "\n"
    assert fingerprint([r]) == hashlib.sha256(line.encode()).hexdigest()
    labelled = replace(r, label="yes", split="test")
    assert fingerprint([labelled]) != fingerprint([r])
    write_jsonl([r, labelled], tmp_path / "r.jsonl")
    assert read_jsonl(tmp_path / "r.jsonl") == [r, labelled]
