"""Medical QA records from their upstream formats, cleaned and split by group.

    records, report = load_records(DataConfig(source="medquad", path="MedQuAD/"))
    splits = split_records(records, val_fraction=0.1, test_fraction=0.1, seed=0)

Every source yields `Record`s. A group is the unit that never straddles two splits: MedQuAD's
`focus` (the same question recurs across sources with different answers), the demo set's
topic, otherwise the normalized question.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from trainables.config import DataConfig
from trainables.errors import DataError

__all__ = [
    "DataError",
    "DataReport",
    "Record",
    "fingerprint",
    "load_records",
    "read_jsonl",
    "split_records",
    "write_jsonl",
]

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Record:
    id: str
    question: str
    answer: str
    group: str
    source: str
    context: str | None = None
    system: str | None = None


@dataclass
class DataReport:
    """What loading did: records read and dropped by reason."""

    read: int = 0
    dropped: Counter = field(default_factory=Counter)

    @property
    def kept(self) -> int:
        return self.read - sum(self.dropped.values())


def load_records(cfg: DataConfig) -> tuple[list[Record], DataReport]:
    """Read the configured source, clean it, and keep `max_records` whole groups if set."""
    reader = {"demo": _read_demo, "medquad": _read_medquad, "instruction": _read_instruction}
    if cfg.source != "demo":
        _check_path(cfg.path, cfg.source)
    raw = list(reader[cfg.source](cfg.path))
    records, report = _clean(raw)
    where = f"data.path={cfg.path}" if cfg.path else "the demo set"
    if not records:
        reasons = ", ".join(f"{n} {why}" for why, n in report.dropped.items()) or "none read"
        raise DataError(
            f"{where}: no usable question/answer record ({report.read} read; dropped: "
            f"{reasons}); point data.path at a file with non-empty questions and answers"
        )
    if cfg.max_records is not None and len(records) > cfg.max_records:
        records = _take_groups(records, cfg.max_records, cfg.seed)
    return records, report


def split_records(
    records: list[Record], *, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Record]]:
    """Split by group with a seed: whole groups go to test, then validation, the rest train."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    if len(groups) < 3:
        raise DataError(
            f"data: {len(groups)} group(s) in {len(records)} records; a leakage-safe "
            "train/validation/test split needs at least 3 groups; add data"
        )
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    targets = {"test": test_fraction * len(records), "validation": val_fraction * len(records)}
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    i = 0
    # Each split gets at least one group, and training always keeps one.
    for name, reserve in (("test", 2), ("validation", 1)):
        while i < len(order) - reserve and len(splits[name]) < max(1, targets[name]):
            splits[name].extend(groups[order[i]])
            i += 1
    for g in order[i:]:
        splits["train"].extend(groups[g])
    return splits


def fingerprint(records: Iterable[Record]) -> str:
    """sha256 over the records' content, order included: the data a sweep trained on."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(asdict(r), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def write_jsonl(records: Iterable[Record], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[Record]:
    with open(path, encoding="utf-8") as f:
        return [Record(**json.loads(line)) for line in f if line.strip()]


# -- sources ---------------------------------------------------------------------------------


def _read_demo(_: str | None) -> Iterator[Record]:
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


def _read_medquad(path: str) -> Iterator[Record]:
    """MedQuAD as cloned (a folder of XML files) or as its .tar.gz; every schema variant."""
    p = Path(path)
    found = False
    for name, data in _xml_files(p):
        found = True
        yield from _parse_medquad_xml(name, data)
    if not found:
        raise DataError(
            f"data.path={path}: no .xml files found; MedQuAD wants the folder cloned from its "
            "repository (e.g. 1_CancerGov_QA/0000001_1.xml ...) or its .tar.gz"
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
            f"data.path={p}: MedQuAD wants a folder of XML files or a .tar.gz of one, got a file"
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
    focus = _normalize_text(root.findtext(focus_tag) or "")
    stem = Path(name).stem
    pairs = root.find(pairs_tag)
    for pair in pairs if pairs is not None else []:
        yield Record(
            # Raw pair ids repeat across sources, so the id carries the source and file.
            id=f"{src}_{stem}-{pair.get('pid')}",
            question=_normalize_text(pair.findtext(q_tag) or ""),
            answer=_normalize_text(pair.findtext(a_tag) or ""),
            group=focus.lower() or f"{src}_{stem}",
            source=f"medquad/{src}",
        )


def _read_instruction(path: str) -> Iterator[Record]:
    """{instruction, input, output} rows: medAlpaca's WikiDoc, ChatDoctor's sets."""
    rows = _read_json_rows(Path(path))
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "output" not in row:
            raise DataError(
                f"data.path={path}: row {i} is not an object with 'instruction', 'input' and "
                "'output' keys; data.source=instruction wants that shape"
            )
        instruction = str(row.get("instruction") or "").strip()
        question = str(row.get("input") or "").strip()
        # Without an input the instruction is the question; with one it frames the answer.
        system = instruction if question else None
        yield Record(
            id=f"row-{i}",
            question=question or instruction,
            answer=str(row.get("output") or ""),
            group=_normalize_question(question or instruction),
            source="instruction",
            system=system,
        )


def _read_json_rows(p: Path) -> list:
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data.path={p}: not UTF-8 text ({e}); convert it to UTF-8") from e
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DataError(
            f"data.path={p}: not a JSON list or JSON Lines ({e.msg} at line {e.lineno}); "
            "fix or re-export the file"
        ) from e


# -- cleaning --------------------------------------------------------------------------------


def _clean(raw: list[Record]) -> tuple[list[Record], DataReport]:
    report = DataReport(read=len(raw))
    seen: set[tuple[str, str]] = set()
    kept = []
    for r in raw:
        q, a = r.question.strip(), r.answer.strip()
        if not q or not a:
            report.dropped["empty"] += 1
            continue
        key = (_normalize_question(q), a)
        if key in seen:
            report.dropped["duplicate"] += 1
            continue
        seen.add(key)
        kept.append(Record(**{**asdict(r), "question": q, "answer": a}))
    return kept, report


def _take_groups(records: list[Record], limit: int, seed: int) -> list[Record]:
    groups = sorted({r.group for r in records})
    random.Random(seed).shuffle(groups)
    chosen, count = set(), Counter(r.group for r in records)
    total = 0
    for g in groups:
        if total >= limit:
            break
        chosen.add(g)
        total += count[g]
    return [r for r in records if r.group in chosen]


def _normalize_text(text: str) -> str:
    """Collapse runs of blanks inside lines and blank-line runs, as MedQuAD's XML indents."""
    lines = (" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _normalize_question(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _check_path(path: str | None, source: str) -> None:
    if not path:
        raise DataError(
            f"data.path: empty, but data.source={source} reads from a path; "
            f"set data.path=/path/to/{'MedQuAD' if source == 'medquad' else 'data.json'}"
        )
    if not Path(path).exists():
        raise DataError(f"data.path={path}: no such file or folder; check the path")
