"""The built-in demo set: 250 question/answer pairs written for medtune, grouped by topic."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from importlib import resources

from trainables.config import DataConfig
from trainables.data import Record


def read_demo(cfg: DataConfig, dropped: Counter) -> Iterator[Record]:
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
