"""Your own table (`table`) or save_to_disk folder (`disk`), its columns named in the config."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from trainables.config import DataConfig
from trainables.data import Record, normalize_question
from trainables.errors import DataError
from trainables.sources.common import HUB_PREFIX, require_columns, text
from trainables.sources.rows import read_rows


def read_table(cfg: DataConfig, dropped: Counter) -> Iterator[Record]:
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
    require_columns(cfg.path, rows, {col: key for key, col in fields.items() if col})
    for i, row in enumerate(rows):
        question = text(row.get(cfg.question_field))
        # A row with no group value is its own question's group, not one big empty group.
        group = text(row.get(cfg.group_field)).strip() if cfg.group_field else ""
        context = text(row.get(cfg.context_field)).strip() if cfg.context_field else ""
        yield Record(
            id=f"row-{i}",
            question=question,
            answer=text(row.get(cfg.answer_field)),
            group=group or normalize_question(question),
            source=cfg.source,
            context=context or None,
        )
