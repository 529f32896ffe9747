"""Medical QA records: load them from any source, clean them, split them by group.

    records, report = load_records(DataConfig(source="medquad", path="MedQuAD/"))
    splits = split_records(records, val_fraction=0.1, test_fraction=0.1, seed=0)

Every source (`trainables.sources`, one reader per upstream format; docs/data.md) yields
`Record`s. A group is the unit that never straddles two splits: MedQuAD's `focus` (the same
question recurs across sources with different answers), the demo set's topic, PubMedQA's
PMID, otherwise the normalized question. Groups that share a normalized question are split
as one, so no question is ever asked in two splits.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from trainables.config import DataConfig
from trainables.errors import DataError

__all__ = [
    "SPLITS",
    "DataError",
    "DataReport",
    "Record",
    "fingerprint",
    "load_records",
    "normalize_question",
    "normalize_text",
    "read_jsonl",
    "shared_between",
    "split_records",
    "write_jsonl",
]

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Record:
    """One question/answer example.

    `label` is the class the answer stands for where the source has one (PubMedQA's
    yes/no/maybe). `split` is a split the source itself fixes (PubMedQA's official test set);
    None lets `split_records` choose.
    """

    id: str
    question: str
    answer: str
    group: str
    source: str
    context: str | None = None
    system: str | None = None
    label: str | None = None
    split: str | None = None


_FIELDS = tuple(f.name for f in fields(Record))


@dataclass
class DataReport:
    """What loading did: records read and dropped by reason (empty, duplicate, filtered)."""

    read: int = 0
    dropped: Counter = field(default_factory=Counter)

    @property
    def kept(self) -> int:
        return self.read - sum(self.dropped.values())


def load_records(cfg: DataConfig) -> tuple[list[Record], DataReport]:
    """Read the configured source, clean it, and keep `max_records` whole groups if set."""
    # Imported here: the readers build Records from this module.
    from trainables.sources import read_source

    report = DataReport()
    raw = read_source(cfg, report.dropped)
    report.read = len(raw) + sum(report.dropped.values())
    records = _clean(raw, report)
    where = f"data.path={cfg.path}" if cfg.source != "demo" else "the demo set"
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
    """Split by group with a seed: whole groups go to test, then validation, the rest train.

    Groups sharing a normalized question are merged first. A record whose source fixed its
    split stays there, and the rest of its merged group joins it. The other records fill
    the splits no source fixed (fractions are shares of these records); the rest train.
    """
    units = _merged_groups(records)
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    free = []
    for key, unit in units.items():
        hints = [r.split for r in unit if r.split]
        if not hints:
            free.append(key)
            continue
        for r in unit:
            splits[r.split or hints[0]].append(r)
    open_splits = [name for name in ("test", "validation") if not splits[name]]
    needed = len(open_splits) + 1
    if open_splits and len(free) < needed:
        names = "/".join(["train", *open_splits[::-1]])
        raise DataError(
            f"data: {len(free)} group(s) in {sum(len(units[k]) for k in free)} records; a "
            f"leakage-safe {names} split needs at least {needed} groups; add data"
        )
    free.sort()
    random.Random(seed).shuffle(free)
    pool = sum(len(units[k]) for k in free)
    fractions = {"test": test_fraction, "validation": val_fraction}
    i = 0
    # Each open split gets at least one group, and training always keeps one.
    for n, name in enumerate(open_splits):
        reserve = len(open_splits) - n
        while i < len(free) - reserve and len(splits[name]) < max(1, fractions[name] * pool):
            splits[name].extend(units[free[i]])
            i += 1
    for key in free[i:]:
        splits["train"].extend(units[key])
    return splits


def shared_between(a: list[Record], b: list[Record]) -> tuple[set[str], set[str]]:
    """The groups, and the normalized questions, that two splits have in common."""
    groups = {r.group for r in a} & {r.group for r in b}
    questions = {normalize_question(r.question) for r in a}
    return groups, questions & {normalize_question(r.question) for r in b}


def fingerprint(records: Iterable[Record]) -> str:
    """sha256 over the records' content, order included: the data a sweep trained on."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(_as_dict(r), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def write_jsonl(records: Iterable[Record], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(_as_dict(r), ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[Record]:
    with open(path, encoding="utf-8") as f:
        return [Record(**json.loads(line)) for line in f if line.strip()]


def normalize_text(text: str) -> str:
    """Collapse runs of blanks inside lines and blank-line runs, as MedQuAD's XML indents."""
    lines = (" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def normalize_question(text: str) -> str:
    """Lower case, punctuation to blanks, blanks collapsed: 'What is gout ?' == 'what is gout'."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


# -- helpers ---------------------------------------------------------------------------------


def _clean(raw: list[Record], report: DataReport) -> list[Record]:
    """Strip, drop empty questions or answers, drop duplicates; count both in `report`."""
    seen: set[tuple[str, str | None, str]] = set()
    kept = []
    for r in raw:
        q, a = r.question.strip(), r.answer.strip()
        if not q or not a:
            report.dropped["empty"] += 1
            continue
        # The context is part of the example: one question about two abstracts is two.
        key = (normalize_question(q), r.context, a)
        if key in seen:
            report.dropped["duplicate"] += 1
            continue
        seen.add(key)
        kept.append(replace(r, question=q, answer=a))
    return kept


def _merged_groups(records: list[Record]) -> dict[str, list[Record]]:
    """Records by group, groups that share a normalized question merged (union-find)."""
    parent: dict[str, str] = {}

    def root(g: str) -> str:
        while parent.setdefault(g, g) != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    first_group: dict[str, str] = {}
    for r in records:
        other = first_group.setdefault(normalize_question(r.question), r.group)
        a, b = root(r.group), root(other)
        if a != b:
            # The smaller name wins, so the merged group's key does not depend on order.
            parent[max(a, b)] = min(a, b)
    units: dict[str, list[Record]] = {}
    for r in records:
        units.setdefault(root(r.group), []).append(r)
    return units


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


def _as_dict(r: Record) -> dict:
    # Every field is a string or None: a shallow dict is asdict() without its deep copies.
    d = {f: getattr(r, f) for f in _FIELDS}
    # Fields added after the first release are left out while empty, so that data without
    # them keeps the fingerprint (and the file) earlier versions wrote.
    for key in ("label", "split"):
        if d[key] is None:
            del d[key]
    return d
