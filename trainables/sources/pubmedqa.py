"""PubMedQA PQA-L: upstream ori_pqal.json or the Hugging Face export, official test split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from trainables.config import DataConfig
from trainables.data import Record
from trainables.errors import DataError
from trainables.sources.common import HUB_PREFIX, load_json, text
from trainables.sources.rows import read_rows

_DECISIONS = ("yes", "no", "maybe")


def read_pubmedqa(cfg: DataConfig, dropped: Counter) -> Iterator[Record]:
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
    data = load_json(p) if p.suffix == ".json" else read_rows(path)
    if isinstance(data, dict):
        # Upstream ori_pqal.json: {PMID: {QUESTION, CONTEXTS, LONG_ANSWER, final_decision}}.
        keys = ("QUESTION", "CONTEXTS", "LONG_ANSWER")
        return {
            str(pmid): {
                "question": text(item["QUESTION"]),
                "contexts": [text(c) for c in item["CONTEXTS"]],
                "long_answer": text(item["LONG_ANSWER"]),
                "decision": text(item.get("final_decision")),
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
            "question": text(row["question"]),
            "contexts": [text(c) for c in context["contexts"]],
            "long_answer": text(row.get("long_answer")),
            "decision": text(row.get("final_decision")),
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
        ids = load_json(path)  # {PMID: label} upstream, or a list of PMIDs
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
    folds = load_json(path)
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
