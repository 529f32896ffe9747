"""Helpers every reader shares: paths, cells as text, JSON documents, required columns."""

from __future__ import annotations

import json
from pathlib import Path

from trainables.errors import DataError

HUB_PREFIX = "hub:"
_TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet", ".pq")


def text(value) -> str:
    """A cell as text: None is empty, numbers and the like are written out."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def is_table(path: str) -> bool:
    return path.startswith(HUB_PREFIX) or path.lower().endswith(_TABLE_SUFFIXES)


def check_path(path: str | None, source: str) -> None:
    if not path:
        raise DataError(
            f"data.path: empty, but data.source={source} reads from a path; "
            f"set data.path=/path/to/{'MedQuAD' if source == 'medquad' else 'data.json'}"
        )
    if not path.startswith(HUB_PREFIX) and not Path(path).expanduser().exists():
        raise DataError(f"data.path={path}: no such file or folder; check the path")


def load_json(p: Path):
    """A JSON document, or the rows of a JSON Lines file."""
    try:
        content = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data.path={p}: not UTF-8 text ({e}); convert it to UTF-8") from e
    if not content.strip():
        raise DataError(
            f"data.path={p}: the file is empty (0 rows); point data.path at the data, or "
            "download it again"
        )
    try:
        return json.loads(content)
    except json.JSONDecodeError as whole:
        lines = content.splitlines()
        first = next((line for line in lines if line.strip()), "")
        if not first.lstrip().startswith("{") or not _parses(first):
            raise _json_error(p, whole) from whole
        rows = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise _json_error(p, e, number) from e
        return rows


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _json_error(p: Path, e: json.JSONDecodeError, line: int | None = None) -> DataError:
    return DataError(
        f"data.path={p}: not a JSON list or JSON Lines ({e.msg}: line {line or e.lineno}, "
        f"column {e.colno}); "
        "fix or re-export the file (a cut-off download ends mid-record)"
    )


def require_columns(path: str, rows: list[dict], wanted: dict[str, str]) -> None:
    """Raise unless every column in `wanted` occurs; it maps a column to the key naming it."""
    if not rows:
        raise DataError(
            f"data.path={path}: no rows (the file is empty or holds only a header); point "
            "data.path at the data, or export it again"
        )
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
