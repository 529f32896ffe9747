"""Rows of a table in any file format people save one in: CSV/TSV, JSON, JSON Lines, Parquet."""

from __future__ import annotations

import csv
from pathlib import Path

from trainables.errors import DataError
from trainables.sources.common import HUB_PREFIX, load_json
from trainables.sources.disk import disk_rows, hub_rows


def read_rows(path: str) -> list[dict]:
    """The rows of a table: CSV/TSV, JSON list or Lines, Parquet, save_to_disk folder, hub:."""
    if path.startswith(HUB_PREFIX):
        return hub_rows(path)
    p = Path(path).expanduser()
    if p.is_dir():
        return disk_rows(p)
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows = _csv_rows(p, "\t" if suffix == ".tsv" else ",")
    elif suffix in (".parquet", ".pq"):
        rows = _parquet_rows(p)
    elif suffix in (".json", ".jsonl", ".ndjson"):
        rows = load_json(p)
        if isinstance(rows, dict):
            if rows and all(isinstance(v, dict) for v in rows.values()):
                raise DataError(
                    f"data.path={p}: a JSON object of objects, not a list of rows or JSON "
                    "Lines; write one object per row (pandas: to_json(orient='records'))"
                )
            rows = [rows]  # JSON Lines of one row
        elif not isinstance(rows, list):
            raise DataError(
                f"data.path={p}: the JSON holds a {type(rows).__name__}, not rows; write a list "
                "of objects (one per row) or JSON Lines"
            )
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
