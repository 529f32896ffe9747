"""Every data.source from its upstream format: small fixtures written here, the real sets in
../shared/data when present."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import shared_data
from trainables.config import DataConfig
from trainables.data import DataError, load_records, split_records
from trainables.sources import is_site_help, read_source
from tune.config import ConfigError, load_config

DECISIONS = ("yes", "no", "maybe")
TOPICS = [
    "statin therapy lower stroke risk after transient ischaemic attack",
    "early mobilisation shorten hospital stay after hip fracture surgery",
    "vitamin D supplementation prevent falls in nursing home residents",
    "preoperative anaemia predict transfusion in cardiac surgery",
    "night shift work raise the incidence of type 2 diabetes",
    "telemonitoring reduce readmissions for chronic heart failure",
    "antibiotic prophylaxis prevent infection after dog bites",
    "breastfeeding protect against childhood asthma",
    "smoking cessation programmes work in psychiatric inpatients",
    "ultrasound guidance improve success of radial artery cannulation",
    "metformin use relate to lower colorectal cancer incidence",
    "bariatric surgery resolve obstructive sleep apnoea",
]


def pubmedqa_items(leak: bool = False) -> dict[str, dict]:
    """ori_pqal.json's shape: 12 PMIDs, the first 4 in the test set (see write_pubmedqa)."""
    items = {}
    for k, topic in enumerate(TOPICS):
        items[str(21000 + k)] = {
            "QUESTION": f"Does {topic}?",
            "CONTEXTS": [f"We studied whether {topic}.", f"In {40 + k} patients it did."],
            "LABELS": ["BACKGROUND", "RESULTS"],
            "MESHES": ["Humans"],
            "YEAR": "2011",
            "reasoning_required_pred": "yes",
            "reasoning_free_pred": "yes",
            "final_decision": DECISIONS[k % 3],
            "LONG_ANSWER": f"In this cohort, {topic} in most patients.",
        }
    if leak:
        # Two train items of folds 1-3 ask what a test item asks: once verbatim, once with one
        # word more (a near-duplicate).
        items["21004"]["QUESTION"] = items["21000"]["QUESTION"]
        items["21005"]["QUESTION"] = items["21001"]["QUESTION"].replace("?", " today?")
    return items


def write_pubmedqa(folder: Path, leak: bool = False) -> Path:
    """ori_pqal.json, test_ground_truth.json and splits/pqal_cv_folds.json, as upstream."""
    folder.mkdir(parents=True, exist_ok=True)
    items = pubmedqa_items(leak)
    pmids = list(items)
    (folder / "ori_pqal.json").write_text(json.dumps(items, indent=4))
    truth = {p: items[p]["final_decision"] for p in pmids[:4]}
    (folder / "test_ground_truth.json").write_text(json.dumps(truth, indent=4))
    rest = pmids[4:]
    folds = {str(f): {"train": rest[: 2 * f] + rest[2 * f + 2 :], "dev": rest[2 * f : 2 * f + 2]}
             for f in range(4)}  # fmt: skip
    (folder / "splits").mkdir(exist_ok=True)
    (folder / "splits" / "pqal_cv_folds.json").write_text(json.dumps(folds))
    return folder / "ori_pqal.json"


def hf_rows(items: dict[str, dict]) -> list[dict]:
    """The same items in the Hugging Face export's shape (qiaojin/PubMedQA, pqa_labeled)."""
    return [
        {
            "pubid": int(pmid),
            "question": it["QUESTION"],
            "context": {"contexts": it["CONTEXTS"], "labels": it["LABELS"], "meshes": it["MESHES"]},
            "long_answer": it["LONG_ANSWER"],
            "final_decision": it["final_decision"],
        }
        for pmid, it in items.items()
    ]


def load(**kwargs):
    return load_records(DataConfig(**kwargs))


def split(records, seed=0):
    return split_records(records, val_fraction=0.1, test_fraction=0.1, seed=seed)


def assert_one_line(error: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


# -- MedQuAD's CSV ---------------------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter=",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_medquad_csv_as_hub_copies_ship_it(tmp_path):
    path = write_csv(
        tmp_path / "medquad.csv",
        ["qtype", "Question", "Answer"],
        [
            ["information", "What is (are) Gout ?", "Gout is a form of arthritis,\nwith flares."],
            ["information", "What is (are) gout?", "Gout is a form of arthritis,\nwith flares."],
            ["treatment", "What are the treatments for Gout ?", ""],
            ["symptoms", "What are the symptoms of Acne ?", "Spots."],
        ],
    )
    records, report = load(source="medquad", path=str(path))
    assert report.read == 4 and report.dropped == {"duplicate": 1, "empty": 1}
    assert [r.question for r in records] == [
        "What is (are) Gout ?",
        "What are the symptoms of Acne ?",
    ]
    assert records[0].answer == "Gout is a form of arthritis,\nwith flares."  # quoted newline kept
    assert records[0].group == "what is are gout"  # no focus in the CSV: the question groups
    assert {r.source for r in records} == {"medquad/csv"}


def test_medquad_csv_missing_its_answer_column(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["qtype", "Question"], [["information", "What is X?"]])
    with pytest.raises(DataError, match=r"no column 'Answer'") as info:
        load(source="medquad", path=str(path))
    assert_one_line(info, f"data.path={path}", "columns found: qtype, Question")


@pytest.mark.slow
def test_medquad_whole_tree_matches_the_reference_conversion():
    archive = shared_data("medquad", "MedQuAD-xml.tar.gz")
    reference = shared_data("medquad", "medquad.jsonl")
    raw = read_source(DataConfig(source="medquad", path=str(archive)), Counter())
    answered = {r.id: r for r in raw if r.answer.strip()}
    assert len(raw) == 47457 and len(answered) == 16423  # before deduplication
    expected = [json.loads(line) for line in open(reference, encoding="utf-8")]
    assert {e["id"] for e in expected} == set(answered)
    for e in expected:
        r = answered[e["id"]]
        assert (r.question, r.answer) == (e["question"], e["answer"]), e["id"]
        # A document without a focus is its own group.
        assert r.group == (e["focus"].lower() or e["id"].rsplit("-", 1)[0]), e["id"]


def test_medquad_csv_of_the_whole_set(tmp_path):
    """The hub copies' CSV of all 16,423 answered pairs reads like the XML tree does."""
    reference = shared_data("medquad", "medquad.jsonl")
    expected = [json.loads(line) for line in open(reference, encoding="utf-8")]
    rows = [[e["question_type"], e["question"], e["answer"]] for e in expected]
    path = write_csv(tmp_path / "medquad.csv", ["qtype", "Question", "Answer"], rows)
    raw = read_source(DataConfig(source="medquad", path=str(path)), Counter())
    assert [(r.question, r.answer) for r in raw] == [(e["question"], e["answer"]) for e in expected]


# -- PubMedQA --------------------------------------------------------------------------------


def test_pubmedqa_upstream_official_test_split_and_tasks(tmp_path):
    path = write_pubmedqa(tmp_path / "pubmedqa")
    items = pubmedqa_items()
    records, report = load(source="pubmedqa", path=str(path))
    assert report.read == 12 and not report.dropped
    splits = split(records)
    assert [r.id for r in splits["test"]] == list(items)[:4]
    assert len(splits["validation"]) == 1 and len(splits["train"]) == 7  # 10% of the other 8
    r = records[0]
    assert r.group == r.id == "21000"
    assert r.answer == items["21000"]["LONG_ANSWER"] and r.label == "yes"
    assert r.context == "\n".join(items["21000"]["CONTEXTS"])
    decisions, _ = load(source="pubmedqa", path=str(path), task="decision")
    assert [d.answer for d in decisions] == [it["final_decision"] for it in items.values()]
    assert Counter(d.label for d in decisions) == {"yes": 4, "no": 4, "maybe": 4}


def test_pubmedqa_official_fold(tmp_path):
    path = write_pubmedqa(tmp_path / "pubmedqa")
    pmids = list(pubmedqa_items())
    for fold in (0, 2):
        records, _ = load(source="pubmedqa", path=str(tmp_path / "pubmedqa"), fold=fold)
        splits = split(records, seed=fold)
        assert [r.id for r in splits["test"]] == pmids[:4]
        assert [r.id for r in splits["validation"]] == pmids[4 + 2 * fold : 6 + 2 * fold]
        assert len(splits["train"]) == 6
    (path.parent / "splits" / "pqal_cv_folds.json").unlink()
    with pytest.raises(DataError, match=r"data.fold=1: no splits/pqal_cv_folds.json beside"):
        load(source="pubmedqa", path=str(path), fold=1)


@pytest.mark.parametrize("form", ["json", "jsonl", "parquet", "disk"])
def test_pubmedqa_hugging_face_export_reads_like_upstream(tmp_path, form):
    upstream = write_pubmedqa(tmp_path)
    rows = hf_rows(pubmedqa_items())
    path = tmp_path / f"pqa_labeled.{form}"
    if form == "json":
        path.write_text(json.dumps(rows))
    elif form == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif form == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import datasets

        path = tmp_path / "pqa_labeled"  # what load_dataset(...).save_to_disk writes
        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(path)
    for task in ("long_answer", "decision"):
        expected, _ = load(source="pubmedqa", path=str(upstream), task=task)
        got, _ = load(source="pubmedqa", path=str(path), task=task)
        assert got == expected


def test_pubmedqa_test_ids_elsewhere_or_missing(tmp_path):
    path = write_pubmedqa(tmp_path / "data")
    ids = tmp_path / "test_pmids.txt"
    ids.write_text("21001\n21002\n")  # one PMID a line, as splits/test_pmids.txt
    (path.parent / "test_ground_truth.json").unlink()
    with pytest.raises(DataError, match=r"no test_ground_truth.json beside it") as info:
        load(source="pubmedqa", path=str(path))
    assert_one_line(info, f"data.path={path}", "data.test_ids=")
    records, _ = load(source="pubmedqa", path=str(path), test_ids=str(ids))
    assert {r.id for r in split(records)["test"]} == {"21001", "21002"}
    ids.write_text("999\n")
    with pytest.raises(DataError, match=r"none of its 12 PMIDs is in the official test set"):
        load(source="pubmedqa", path=str(path), test_ids=str(ids))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"21000": {"QUESTION": "Does it?", "CONTEXTS": ["x"]', "not a JSON list or JSON Lines"),
        ('{"21000": {"QUESTION": "Does it?"}}', "item 21000 lacks CONTEXTS, LONG_ANSWER"),
        ('[{"pubid": 1, "question": "q", "context": "text"}]', "row 0: 'context' is not an"),
        (
            '[{"pubid": 21000, "question": "q", "context": {"contexts": []}, '
            '"final_decision": "Y"}]',
            "item 21000 has final_decision 'Y'; PubMedQA's are yes, no or maybe",
        ),
    ],
)
def test_pubmedqa_malformed(tmp_path, content, message):
    write_pubmedqa(tmp_path)
    path = tmp_path / "ori_pqal.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load(source="pubmedqa", path=str(path))
    assert_one_line(info, f"data.path={path}")


def test_pubmedqa_official_files():
    folder = shared_data("pubmedqa")
    official = set(json.loads((folder / "test_ground_truth.json").read_text()))
    folds = json.loads((folder / "splits" / "pqal_cv_folds.json").read_text())
    records, report = load(source="pubmedqa", path=str(folder / "ori_pqal.json"))
    assert report.read == 1000 and not report.dropped
    splits = split(records)
    assert len(official) == 500 and {r.id for r in splits["test"]} == official
    assert len(splits["validation"]) == 50 and len(splits["train"]) == 450
    assert all(r.context and r.answer and r.label in DECISIONS for r in records)
    records, _ = load(source="pubmedqa", path=str(folder), fold=7, task="decision")
    splits = split(records)
    assert {r.id for r in splits["test"]} == official
    assert {r.id for r in splits["validation"]} == set(folds["7"]["dev"])
    assert {r.id for r in splits["train"]} == set(folds["7"]["train"])
    truth = json.loads((folder / "test_ground_truth.json").read_text())
    assert all(r.answer == r.label == truth[r.id] for r in splits["test"])


# -- instruction rows: the WikiDoc filter ----------------------------------------------------


def test_instruction_filter_drops_site_help_and_templates(tmp_path):
    rows = [
        {"instruction": "Answer this question truthfully", "input": q, "output": a}
        for q, a in [
            ("What causes (disease name)?", "Mutations in the AR gene."),
            ("How do I insert a reference?", "To learn how to insert references Click here"),
            ("What causes gout?", "Uric acid crystals in a joint."),
            ("What are the symptoms of angina?", "Chest pain. {{#ev:youtube|abc}}"),
        ]
    ]
    path = tmp_path / "wikidoc.json"
    path.write_text(json.dumps(rows))
    records, report = load(source="instruction", path=str(path), drop_non_patient_info=True)
    assert report.read == 4 and report.dropped == {"filtered": 2}
    assert [r.question for r in records] == [
        "What causes gout?",
        "What are the symptoms of angina?",
    ]
    records, report = load(source="instruction", path=str(path))
    assert len(records) == 4 and not report.dropped


def test_wikidoc_filter_finds_the_flagged_rows():
    lines = shared_data("wikidoc", "wikidoc_patient_information.jsonl")
    flagged_file = shared_data("wikidoc", "flagged_non_patient_info_lines.txt")
    flagged = {int(line.split("\t")[0]) for line in open(flagged_file) if not line.startswith("#")}
    rows = [json.loads(line) for line in open(lines, encoding="utf-8")]
    hits = {i for i, r in enumerate(rows) if is_site_help(r["input"], r["output"])}
    assert len(flagged) == 84 and flagged <= hits
    assert len(hits - flagged) <= 2  # one more unfilled template ("This section should ...")
    path = shared_data("wikidoc", "medical_meadow_small.json")
    records, report = load(source="instruction", path=str(path), drop_non_patient_info=True)
    assert report.read == 5942 and report.dropped["filtered"] == len(hits)
    assert len(records) == report.kept


# -- tables ----------------------------------------------------------------------------------

TABLE = [
    {"q": "What is gout?", "a": "A form of arthritis.", "ctx": "Rheumatology", "topic": "gout"},
    {"q": "How is gout treated?", "a": "With NSAIDs.", "ctx": None, "topic": "gout"},
    {"q": "What is acne?", "a": "A skin condition.", "ctx": "Dermatology", "topic": "acne"},
    {"q": "What is asthma?", "a": "", "ctx": "", "topic": "asthma"},
]
FIELDS = {
    "question_field": "q",
    "answer_field": "a",
    "context_field": "ctx",
    "group_field": "topic",
}


def write_table(path: Path, rows: list[dict]) -> Path:
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        header = list(rows[0])
        body = [["" if r.get(k) is None else r[k] for k in header] for r in rows]
        write_csv(path, header, body, "\t" if suffix == ".tsv" else ",")
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.json", "t.jsonl", "t.parquet"])
def test_table_every_format(tmp_path, name):
    path = write_table(tmp_path / name, TABLE)
    records, report = load(source="table", path=str(path), **FIELDS)
    assert report.read == 4 and report.dropped == {"empty": 1}
    assert [(r.question, r.answer, r.group, r.context) for r in records] == [
        ("What is gout?", "A form of arthritis.", "gout", "Rheumatology"),
        ("How is gout treated?", "With NSAIDs.", "gout", None),
        ("What is acne?", "A skin condition.", "acne", "Dermatology"),
    ]
    assert {r.source for r in records} == {"table"}


def test_table_groups_by_question_without_a_group_field(tmp_path):
    path = write_table(tmp_path / "t.jsonl", [{"question": "What is Gout ?", "answer": "x"}])
    records, _ = load(source="table", path=str(path))
    assert records[0].group == "what is gout" and records[0].context is None


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("t.csv", {"answer_field": "answer"}, "no column 'answer' (data.answer_field); columns "
         "found: q, a, ctx, topic; set data.answer_field to one of them"),
        ("t.parquet", {"group_field": "focus"}, "no column 'focus' (data.group_field)"),
    ],
)  # fmt: skip
def test_table_missing_column(tmp_path, name, fields, message):
    path = write_table(tmp_path / name, TABLE)
    with pytest.raises(DataError, match=r"no column") as info:
        load(source="table", path=str(path), **(FIELDS | fields))
    assert_one_line(info, f"data.path={path}", message)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "t.csv",
            'question,answer\n"What is gout?,A form of',
            "not valid CSV in the row starting at line 2",
        ),
        ("t.json", '[{"question": "q", "answer": "a"}, {"quest', "not a JSON list or JSON Lines"),
        ("t.jsonl", '{"question": "q", "answer": "a"}\n{"quest', "not a JSON list or JSON Lines"),
        ("t.json", '{"a": {"question": "q"}}', "a JSON object of objects, not a list of rows"),
        ("t.jsonl", '["q", "a"]\n', "row 0 is str, not an object of named fields"),
        ("t.xlsx", "", "cannot tell the format of 't.xlsx'"),
        ("t.csv", "question,answer\nWhat is gout?,\nWhat is acne?, \n", "no usable question/"),
    ],
)
def test_table_malformed(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load(source="table", path=str(path))
    assert_one_line(info, f"data.path={path}")


def test_table_truncated_parquet(tmp_path):
    path = write_table(tmp_path / "t.parquet", TABLE)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"not a readable Parquet file") as info:
        load(source="table", path=str(path), **FIELDS)
    assert_one_line(info, f"data.path={path}")


def test_every_answer_empty_is_one_line(tmp_path):
    path = write_table(tmp_path / "t.csv", [{"question": f"q{i}", "answer": " "} for i in range(3)])
    with pytest.raises(DataError, match=r"no usable question/answer record \(3 read; dropped: 3 "):
        load(source="table", path=str(path))


# -- save_to_disk folders and the hub --------------------------------------------------------


def test_disk_dataset_and_dataset_dict(tmp_path):
    import datasets

    columns = {k: [r[k] for r in TABLE] for k in TABLE[0]}
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "one"))
    records, report = load(source="disk", path=str(tmp_path / "one"), **FIELDS)
    assert report.read == 4 and [r.group for r in records] == ["gout", "gout", "acne"]
    halves = {
        "train": datasets.Dataset.from_dict({k: v[:2] for k, v in columns.items()}),
        "test": datasets.Dataset.from_dict({k: v[2:] for k, v in columns.items()}),
    }
    datasets.DatasetDict(halves).save_to_disk(str(tmp_path / "dict"))
    again, _ = load(source="disk", path=str(tmp_path / "dict"), **FIELDS)
    assert again == records


def test_disk_wants_a_saved_folder(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match=r"not one written by datasets' save_to_disk") as info:
        load(source="disk", path=str(tmp_path / "plain"))
    assert_one_line(info, f"data.path={tmp_path / 'plain'}")
    path = write_table(tmp_path / "t.csv", TABLE)
    with pytest.raises(DataError, match=r"for a single file use data.source=table"):
        load(source="disk", path=str(path))


def test_hub_offline_is_a_quick_clear_error():
    start = time.monotonic()
    with pytest.raises(DataError, match=r"cannot load no-such-org/no-such-set from") as info:
        load(source="table", path="hub:no-such-org/no-such-set")
    assert_one_line(info, "data.path=hub:no-such-org/no-such-set", "HF_HUB_OFFLINE=1")
    assert time.monotonic() - start < 30
    with pytest.raises(DataError, match=r"expected hub:<org>/<name> or hub:<org>/<name>/<sub"):
        load(source="table", path="hub:just-a-name")


# -- config ----------------------------------------------------------------------------------


def test_source_specific_keys_need_their_source(tmp_path):
    # Paths that exist: a config naming a missing data.path is refused for that too.
    (tmp_path / "x.csv").touch()
    x, x_csv = tmp_path, tmp_path / "x.csv"
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.source=table", f"data.path={x_csv}", "data.fold=1"])
    assert "data.fold: got 1; only data.source=pubmedqa reads it, and data.source is table" in str(
        info.value
    )
    with pytest.raises(ConfigError, match=r"data.question_field: got 'Q'; only data.source=table"):
        load_config(None, ["data.source=medquad", f"data.path={x}", "data.question_field=Q"])
    cfg = load_config(None, ["data.source=pubmedqa", f"data.path={x}", "data.task=decision"])
    assert cfg.data.task == "decision"
