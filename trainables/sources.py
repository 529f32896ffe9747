"""One reader per `data.source`, each taking its upstream format as people download it.

    records = read_source(DataConfig(source="pubmedqa", path="pubmedqa/ori_pqal.json"), Counter())

| data.source   | reads                                                 | group            |
|---------------|-------------------------------------------------------|------------------|
| `demo`        | the built-in demo pairs                               | topic            |
| `medquad`     | the XML tree (folder or .tar.gz); a hub copy's CSV    | focus; question  |
| `pubmedqa`    | `ori_pqal.json`; the HF export (JSON, JSONL, Parquet) | PMID             |
| `instruction` | `{instruction, input, output}` rows                   | question         |
| `table`       | CSV, TSV, JSON, JSONL, Parquet with named columns     | `group_field`    |
| `disk`        | a `datasets` save_to_disk folder, read like `table`   | `group_field`    |

Row-shaped sources also take `hub:<org>/<name>[/<subset>]`. Every problem is a one-line
`DataError` naming the path, what was found, and how to fix it. Formats and quirks:
docs/data.md.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from trainables.config import DataConfig
from trainables.data import Record, normalize_question, normalize_text
from trainables.errors import DataError

__all__ = ["HUB_PREFIX", "is_site_help", "read_rows", "read_source"]

HUB_PREFIX = "hub:"
_TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet", ".pq")


def read_source(cfg: DataConfig, dropped: Counter) -> list[Record]:
    """Every record of the configured source; records a filter drops are counted in `dropped`."""
    if cfg.source != "demo":
        _check_path(cfg.path, cfg.source)
    return list(_READERS[cfg.source](cfg, dropped))


# -- demo and MedQuAD ------------------------------------------------------------------------


def _read_demo(cfg: DataConfig, dropped: Counter) -> Iterator[Record]:
    text = resources.files("trainables").joinpath("demo_medqa.jsonl").read_text("utf-8")
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            yield Record(
                id=row["id"],
                question=row["question"],
                answer=row["answer"],
                group=row["topic"],
                source="demo",
            )


def _read_medquad(cfg: DataConfig, dropped: Counter) -> Iterator[Record]:
    """MedQuAD as cloned (XML folder), as its .tar.gz, or as the CSV hub copies ship."""
    if _is_table(cfg.path):
        yield from _read_medquad_table(cfg.path)
        return
    p = Path(cfg.path).expanduser()
    found = False
    for name, data in _xml_files(p):
        found = True
        yield from _parse_medquad_xml(name, data)
    if not found:
        raise DataError(
            f"data.path={cfg.path}: no .xml files found; MedQuAD wants the folder cloned from "
            "its repository (e.g. 1_CancerGov_QA/0000001_1.xml ...), its .tar.gz, or a CSV "
            "with qtype, Question, Answer columns"
        )


def _read_medquad_table(path: str) -> Iterator[Record]:
    rows = read_rows(path)
    shape = "MedQuAD's CSV has qtype, Question, Answer"
    _require_columns(path, rows, {"Question": shape, "Answer": shape})
    for i, row in enumerate(rows):
        question = normalize_text(_text(row.get("Question")))
        # Hub copies drop the focus, so the question is the group: a paraphrase under another
        # focus can land in another split (the XML tree keeps it; prefer it where you can).
        yield Record(
            id=f"row-{i}",
            question=question,
            answer=normalize_text(_text(row.get("Answer"))),
            group=normalize_question(question),
            source="medquad/csv",
        )


def _xml_files(p: Path) -> Iterator[tuple[str, bytes]]:
    if p.is_dir():
        for f in sorted(p.rglob("*.xml")):
            yield str(f), f.read_bytes()
    elif p.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(p) as tar:
                for m in sorted(tar.getmembers(), key=lambda m: m.name):
                    if m.isfile() and m.name.endswith(".xml"):
                        yield m.name, tar.extractfile(m).read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"data.path={p}: not a readable tar archive ({e})") from e
    else:
        raise DataError(
            f"data.path={p}: MedQuAD wants a folder of XML files, a .tar.gz of one, or a .csv; "
            f"got {p.suffix or 'a file without a suffix'}"
        )


# root tag -> (source attribute, focus, pairs, question, answer element names)
_MEDQUAD_LAYOUTS = {
    "Document": ("source", "Focus", "QAPairs", "Question", "Answer"),
    "DiseaseFile": ("source", "Focus", "QAPairs", "Question", "Answer"),
    "doc": ("corpus", "doctitle-focus", "qaPairs", "question", "answer"),
}


def _parse_medquad_xml(name: str, data: bytes) -> Iterator[Record]:
    try:
        root = ET.parse(io.BytesIO(data)).getroot()
    except ET.ParseError as e:
        raise DataError(f"{name}: not well-formed XML ({e}); re-download the file") from e
    # Three layouts occur upstream: <Document> (most), <DiseaseFile> (one CDC file), and
    # lower-case <doc>/<qaPairs>/<pair>/<question>/<answer> (four NINDS files).
    layout = _MEDQUAD_LAYOUTS.get(root.tag)
    if layout is None:
        raise DataError(
            f"{name}: unknown MedQuAD root element <{root.tag}>; expected <Document>, "
            "<DiseaseFile> or <doc>"
        )
    source, focus_tag, pairs_tag, q_tag, a_tag = layout
    src = root.get(source) or "MedQuAD"
    focus = normalize_text(root.findtext(focus_tag) or "")
    stem = Path(name).stem
    pairs = root.find(pairs_tag)
    for pair in pairs if pairs is not None else []:
        yield Record(
            # Raw pair ids repeat across sources, so the id carries the source and file.
            id=f"{src}_{stem}-{pair.get('pid')}",
            question=normalize_text(pair.findtext(q_tag) or ""),
            answer=normalize_text(pair.findtext(a_tag) or ""),
            group=focus.lower() or f"{src}_{stem}",
            source=f"medquad/{src}",
        )


# -- PubMedQA --------------------------------------------------------------------------------

_DECISIONS = ("yes", "no", "maybe")


def _read_pubmedqa(cfg: DataConfig, dropped: Counter) -> Iterator[Record]:
    """PQA-L with its official test split; train/validation from a fold or by seed."""
    items = _pubmedqa_items(cfg.path)
    test_ids = _pubmedqa_test_ids(cfg)
    if not test_ids & items.keys():
        raise DataError(
            f"data.path={cfg.path}: none of its {len(items)} PMIDs is in the official test set "
            f"({len(test_ids)} PMIDs); data.test_ids must list PQA-L's test PMIDs "
            "(test_ground_truth.json) and data.path hold PQA-L"
        )
    dev = _pubmedqa_fold(cfg) if cfg.fold is not None else None
    for pmid, item in items.items():
        decision = item["decision"].strip().lower() or None  # PQA-U has none
        if decision not in (None, *_DECISIONS):
            raise DataError(
                f"data.path={cfg.path}: item {pmid} has final_decision {item['decision']!r}; "
                "PubMedQA's are yes, no or maybe; fix the item"
            )
        if pmid in test_ids:
            split = "test"
        elif dev is not None:
            # A fold names validation; every other non-test item trains, as upstream.
            split = "validation" if pmid in dev else "train"
        else:
            split = None
        yield Record(
            id=pmid,
            question=item["question"],
            answer=(decision or "") if cfg.task == "decision" else item["long_answer"],
            group=pmid,
            source="pubmedqa",
            context="\n".join(c.strip() for c in item["contexts"]),
            label=decision,
            split=split,
        )


def _pubmedqa_items(path: str) -> dict[str, dict]:
    """PMID -> {question, contexts, long_answer, decision}, from either upstream shape."""
    p = Path(path).expanduser()
    saved = ("dataset_info.json", "dataset_dict.json", "state.json")  # save_to_disk's files
    if not path.startswith(HUB_PREFIX) and p.is_dir():
        if (p / "ori_pqal.json").is_file():
            p = p / "ori_pqal.json"
        elif not any((p / name).is_file() for name in saved):
            raise DataError(
                f"data.path={path}: a folder without ori_pqal.json (nor a save_to_disk "
                "dataset); point data.path at ori_pqal.json or a Hugging Face export (.json, "
                ".jsonl, .parquet, or its save_to_disk folder)"
            )
    data = _load_json(p) if p.suffix == ".json" else read_rows(path)
    if isinstance(data, dict):
        # Upstream ori_pqal.json: {PMID: {QUESTION, CONTEXTS, LONG_ANSWER, final_decision}}.
        keys = ("QUESTION", "CONTEXTS", "LONG_ANSWER")
        return {
            str(pmid): {
                "question": _text(item["QUESTION"]),
                "contexts": [_text(c) for c in item["CONTEXTS"]],
                "long_answer": _text(item["LONG_ANSWER"]),
                "decision": _text(item.get("final_decision")),
            }
            for pmid, item in _checked_rows(path, data.items(), keys)
        }
    # The Hugging Face export: rows of {pubid, question, context: {contexts, ...}, ...}.
    items = {}
    for i, row in _checked_rows(path, enumerate(data), ("pubid", "question", "context")):
        context = row["context"]
        if not isinstance(context, dict) or "contexts" not in context:
            raise DataError(
                f"data.path={path}: row {i}: 'context' is not an object with 'contexts' "
                "(the Hugging Face export's shape); re-export the file"
            )
        items[str(row["pubid"])] = {
            "question": _text(row["question"]),
            "contexts": [_text(c) for c in context["contexts"]],
            "long_answer": _text(row.get("long_answer")),
            "decision": _text(row.get("final_decision")),
        }
    return items


def _checked_rows(path: str, rows, keys: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    for where, row in rows:
        missing = [k for k in keys if not isinstance(row, dict) or k not in row]
        if missing:
            raise DataError(
                f"data.path={path}: item {where} lacks {', '.join(missing)}; data.source="
                "pubmedqa wants ori_pqal.json ({PMID: {QUESTION, CONTEXTS, LONG_ANSWER, ...}}) "
                "or the Hugging Face export (pubid, question, context, long_answer, ...)"
            )
        yield where, row


def _pubmedqa_test_ids(cfg: DataConfig) -> set[str]:
    if cfg.test_ids:
        path = Path(cfg.test_ids).expanduser()
        if not path.is_file():
            raise DataError(f"data.test_ids={cfg.test_ids}: no such file; check the path")
    else:
        path = _beside(cfg.path, "test_ground_truth.json")
        if path is None:
            raise DataError(
                f"data.path={cfg.path}: no test_ground_truth.json beside it and data.test_ids "
                "is empty; PubMedQA is tested on its official 500 PMIDs: pass data.test_ids="
                "/path/to/test_ground_truth.json (the pubmedqa repository's data/ folder)"
            )
    if path.suffix == ".json":
        ids = _load_json(path)  # {PMID: label} upstream, or a list of PMIDs
    else:
        ids = path.read_text(encoding="utf-8").split()  # one PMID a line
    if not isinstance(ids, (dict, list)) or not ids:
        raise DataError(
            f"data.test_ids={path}: expected {{PMID: label}}, a JSON list of PMIDs or one PMID "
            "a line; got none"
        )
    return {str(i) for i in ids}


def _pubmedqa_fold(cfg: DataConfig) -> set[str]:
    """The dev PMIDs of official fold `cfg.fold` (splits/pqal_cv_folds.json)."""
    where = [cfg.path] + ([cfg.test_ids] if cfg.test_ids else [])
    path = next(
        (p for w in where if (p := _beside(w, "splits/pqal_cv_folds.json")) is not None), None
    )
    if path is None:
        raise DataError(
            f"data.fold={cfg.fold}: no splits/pqal_cv_folds.json beside data.path or "
            "data.test_ids; put the official folds there, or leave data.fold empty"
        )
    folds = _load_json(path)
    fold = folds.get(str(cfg.fold)) if isinstance(folds, dict) else None
    if not isinstance(fold, dict) or "dev" not in fold:
        found = ", ".join(folds) if isinstance(folds, dict) else type(folds).__name__
        raise DataError(
            f"data.fold={cfg.fold}: {path} has no fold {cfg.fold} with a 'dev' list (found: "
            f"{found}); choose one of its folds"
        )
    return {str(i) for i in fold["dev"]}


def _beside(path: str, name: str) -> Path | None:
    """`name` inside the folder `path`, or next to the file or folder `path`."""
    if path.startswith(HUB_PREFIX):
        return None
    p = Path(path).expanduser()
    candidates = ([p / name] if p.is_dir() else []) + [p.parent / name]
    return next((c for c in candidates if c.is_file()), None)


# -- instruction rows (WikiDoc, ChatDoctor) --------------------------------------------------


def _read_instruction(cfg: DataConfig, dropped: Counter) -> Iterator[Record]:
    """{instruction, input, output} rows: medAlpaca's WikiDoc, ChatDoctor's sets."""
    for i, row in enumerate(read_rows(cfg.path)):
        if "output" not in row:
            raise DataError(
                f"data.path={cfg.path}: row {i} is not an object with 'instruction', 'input' "
                "and 'output' keys; data.source=instruction wants that shape"
            )
        instruction = _text(row.get("instruction")).strip()
        question = _text(row.get("input")).strip()
        answer = _text(row.get("output"))
        if cfg.drop_non_patient_info and is_site_help(question or instruction, answer):
            dropped["filtered"] += 1
            continue
        # Without an input the instruction is the question; with one it frames the answer.
        yield Record(
            id=f"row-{i}",
            question=question or instruction,
            answer=answer,
            group=normalize_question(question or instruction),
            source="instruction",
            system=instruction if question else None,
        )


# WikiDoc's patient-information dump also holds the site's help pages ("How do I insert a
# reference?") and unfilled page templates ("What causes (disease name)?"). On the shared copy
# these patterns find all 84 rows listed in flagged_non_patient_info_lines.txt and one more
# template row ("This section should focus on ..."); no patient question matches.
_PLACEHOLDER = re.compile(
    r"\((?:disease|condition|project|drug|topic) name\)|page template", re.IGNORECASE
)
_SITE_QUESTION = re.compile(
    r"wiki|editor|\bpages?\b|redirect|categor|reference|template|microchapter|\.svg|\bfont\b|"
    r"galler|sidebar|table of contents|\blinks?\b|upload|log in|volunteer|synonym|formatting|"
    r"expert|colou?rs? are available|computer code|audience|syntax|news services|"
    r"meet th(?:ese|ose) needs|contribute|\bediting\b",
    re.IGNORECASE,
)
_SITE_ANSWER = re.compile(
    # '{{#ev:' is a video embed inside real patient pages, so only other templates count.
    r"click here|\{\{(?!#ev:)|mediawiki|editor-in-chief|<ref>|nowiki|wikilink|"
    r"patient information page",
    re.IGNORECASE,
)


def is_site_help(question: str, answer: str) -> bool:
    """Whether a WikiDoc row is a site-help page or an unfilled template (a heuristic)."""
    return bool(
        _PLACEHOLDER.search(question)
        or _SITE_QUESTION.search(question)
        or _SITE_ANSWER.search(answer)
    )


# -- tables: CSV, JSON, Parquet, save_to_disk folders, the hub -------------------------------


def _read_table(cfg: DataConfig, dropped: Counter) -> Iterator[Record]:
    """Any table, its columns named by data.question_field, answer_field, context_field..."""
    if cfg.source == "disk" and not (
        cfg.path.startswith(HUB_PREFIX) or Path(cfg.path).expanduser().is_dir()
    ):
        raise DataError(
            f"data.path={cfg.path}: data.source=disk wants a folder written by datasets' "
            "save_to_disk; for a single file use data.source=table"
        )
    rows = read_rows(cfg.path)
    fields = {
        "data.question_field": cfg.question_field,
        "data.answer_field": cfg.answer_field,
        "data.context_field": cfg.context_field,
        "data.group_field": cfg.group_field,
    }
    _require_columns(cfg.path, rows, {col: key for key, col in fields.items() if col})
    for i, row in enumerate(rows):
        question = _text(row.get(cfg.question_field))
        # A row with no group value is its own question's group, not one big empty group.
        group = _text(row.get(cfg.group_field)).strip() if cfg.group_field else ""
        context = _text(row.get(cfg.context_field)).strip() if cfg.context_field else ""
        yield Record(
            id=f"row-{i}",
            question=question,
            answer=_text(row.get(cfg.answer_field)),
            group=group or normalize_question(question),
            source=cfg.source,
            context=context or None,
        )


def read_rows(path: str) -> list[dict]:
    """The rows of a table: CSV/TSV, JSON list or Lines, Parquet, save_to_disk folder, hub:."""
    if path.startswith(HUB_PREFIX):
        return _hub_rows(path)
    p = Path(path).expanduser()
    if p.is_dir():
        return _disk_rows(p)
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows = _csv_rows(p, "\t" if suffix == ".tsv" else ",")
    elif suffix in (".parquet", ".pq"):
        rows = _parquet_rows(p)
    elif suffix in (".json", ".jsonl", ".ndjson"):
        rows = _load_json(p)
        if isinstance(rows, dict):
            if rows and all(isinstance(v, dict) for v in rows.values()):
                raise DataError(
                    f"data.path={p}: a JSON object of objects, not a list of rows or JSON "
                    "Lines; write one object per row (pandas: to_json(orient='records'))"
                )
            rows = [rows]  # JSON Lines of one row
    else:
        raise DataError(
            f"data.path={p}: cannot tell the format of '{p.name}'; name it .csv, .tsv, .json, "
            f".jsonl or .parquet, or give a save_to_disk folder or hub:<org>/<name>"
        )
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(
                f"data.path={p}: row {i} is {type(row).__name__}, not an object of named "
                "fields; write one object per row"
            )
    return rows


def _csv_rows(p: Path, delimiter: str) -> list[dict]:
    # MedQuAD answers run to 27k characters; csv's default cap is 128k, raised for safety.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter=delimiter, strict=True)
            try:
                return list(reader)
            except csv.Error as e:
                raise DataError(
                    f"data.path={p}: not valid CSV in the row starting at line "
                    f"{reader.line_num + 1} ({e}); fix or re-export the file"
                ) from e
    except UnicodeDecodeError as e:
        raise DataError(f"data.path={p}: not UTF-8 text ({e}); convert it to UTF-8") from e


def _parquet_rows(p: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(p).to_pylist()
    except (pa.ArrowException, OSError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"data.path={p}: not a readable Parquet file ({detail}); re-export the file"
        ) from e


def _load_json(p: Path):
    """A JSON document, or the rows of a JSON Lines file."""
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data.path={p}: not UTF-8 text ({e}); convert it to UTF-8") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as whole:
        lines = text.splitlines()
        first = next((line for line in lines if line.strip()), "")
        if not first.lstrip().startswith("{") or not _parses(first):
            raise _json_error(p, whole) from whole
        try:
            return [json.loads(line) for line in lines if line.strip()]
        except json.JSONDecodeError as e:
            raise _json_error(p, e) from e


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _json_error(p: Path, e: json.JSONDecodeError) -> DataError:
    return DataError(
        f"data.path={p}: not a JSON list or JSON Lines ({e.msg} at line {e.lineno}); "
        "fix or re-export the file (a cut-off download ends mid-record)"
    )


def _disk_rows(p: Path) -> list[dict]:
    import datasets

    try:
        data = datasets.load_from_disk(str(p))
    except FileNotFoundError as e:
        raise DataError(
            f"data.path={p}: a folder, but not one written by datasets' save_to_disk (no "
            "dataset_info.json / state.json); save it with Dataset.save_to_disk or give a file"
        ) from e
    return _dataset_rows(data)


def _hub_rows(path: str) -> list[dict]:
    """A Hugging Face dataset, every split, where the hub (or its cache) can be reached."""
    parts = path[len(HUB_PREFIX) :].split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise DataError(f"data.path={path}: expected hub:<org>/<name> or hub:<org>/<name>/<subset>")
    repo, subset = "/".join(parts[:2]), (parts[2] if len(parts) == 3 else None)
    import huggingface_hub

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        # One quick request first: `datasets` itself retries for half a minute offline.
        try:
            huggingface_hub.dataset_info(repo, timeout=10)
        except Exception as e:  # network and HTTP errors come from several libraries
            raise DataError(
                f"data.path={path}: the Hugging Face hub cannot give {repo} "
                f"({type(e).__name__}); check the name and the network, or download the data "
                "and point data.path at the file or folder"
            ) from e
    import datasets

    try:
        data = datasets.load_dataset(repo, subset)
    except Exception as e:  # offline, missing subset, gated, corrupt cache: all one answer
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"data.path={path}: cannot load {repo} from the Hugging Face hub or its cache "
            f"({detail}); where HF_HUB_OFFLINE=1 only cached datasets load: download it where "
            "the hub can be reached, or point data.path at a file or folder"
        ) from e
    return _dataset_rows(data)


def _dataset_rows(data) -> list[dict]:
    import datasets

    # A DatasetDict's splits are read one after another: medtune splits by group itself.
    parts = list(data.values()) if isinstance(data, datasets.DatasetDict) else [data]
    return [row for part in parts for row in part.to_list()]


def _require_columns(path: str, rows: list[dict], wanted: dict[str, str]) -> None:
    """Raise unless every column in `wanted` occurs; it maps a column to the key naming it."""
    found: dict[str, None] = {}
    for row in rows:
        found.update(dict.fromkeys(map(str, row)))
    for column, key in wanted.items():
        if column in found:
            continue
        names = ", ".join(found) or "none"
        fix = f"set {key} to one of them" if key.startswith("data.") else "check the file"
        raise DataError(
            f"data.path={path}: no column {column!r} ({key}); columns found: {names}; {fix}"
        )


# -- helpers ---------------------------------------------------------------------------------


def _text(value) -> str:
    """A cell as text: None is empty, numbers and the like are written out."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _is_table(path: str) -> bool:
    return path.startswith(HUB_PREFIX) or path.lower().endswith(_TABLE_SUFFIXES)


def _check_path(path: str | None, source: str) -> None:
    if not path:
        raise DataError(
            f"data.path: empty, but data.source={source} reads from a path; "
            f"set data.path=/path/to/{'MedQuAD' if source == 'medquad' else 'data.json'}"
        )
    if not path.startswith(HUB_PREFIX) and not Path(path).expanduser().exists():
        raise DataError(f"data.path={path}: no such file or folder; check the path")


_READERS = {
    "demo": _read_demo,
    "medquad": _read_medquad,
    "pubmedqa": _read_pubmedqa,
    "instruction": _read_instruction,
    "table": _read_table,
    "disk": _read_table,
}
