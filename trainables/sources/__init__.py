"""One reader per `data.source`, each taking its upstream format as people download it.

    records = read_source(DataConfig(source="pubmedqa", path="pubmedqa/ori_pqal.json"), Counter())

| data.source   | module      | reads                                              | group       |
|---------------|-------------|----------------------------------------------------|-------------|
| `demo`        | demo        | the built-in demo pairs                            | topic       |
| `medquad`     | medquad     | the XML tree (folder or .tar.gz); a hub CSV copy   | focus       |
| `pubmedqa`    | pubmedqa    | `ori_pqal.json`; the HF export (JSON/JSONL/Parquet)| PMID        |
| `instruction` | instruction | `{instruction, input, output}` rows                | question    |
| `table`       | table, rows | CSV, TSV, JSON, JSONL, Parquet with named columns  | group_field |
| `disk`        | table, disk | a `datasets` save_to_disk folder, read as `table`  | group_field |

Row-shaped sources also take `hub:<org>/<name>[/<subset>]` (disk.py). Every problem is a
one-line `DataError` naming the path, what was found, and how to fix it. Formats and quirks:
docs/data.md.
"""

from __future__ import annotations

from collections import Counter

from trainables.config import DataConfig
from trainables.data import Record
from trainables.sources.common import HUB_PREFIX, check_path
from trainables.sources.demo import read_demo
from trainables.sources.instruction import is_site_help, read_instruction
from trainables.sources.medquad import read_medquad
from trainables.sources.pubmedqa import read_pubmedqa
from trainables.sources.rows import read_rows
from trainables.sources.table import read_table

__all__ = ["HUB_PREFIX", "is_site_help", "read_rows", "read_source"]

_READERS = {
    "demo": read_demo,
    "medquad": read_medquad,
    "pubmedqa": read_pubmedqa,
    "instruction": read_instruction,
    "table": read_table,
    "disk": read_table,
}


def read_source(cfg: DataConfig, dropped: Counter) -> list[Record]:
    """Every record of the configured source; records a filter drops are counted in `dropped`."""
    if cfg.source != "demo":
        check_path(cfg.path, cfg.source)
    return list(_READERS[cfg.source](cfg, dropped))
