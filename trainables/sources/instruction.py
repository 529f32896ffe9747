"""{instruction, input, output} rows: medAlpaca's WikiDoc, ChatDoctor's sets."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from trainables.config import DataConfig
from trainables.data import Record, normalize_question
from trainables.errors import DataError
from trainables.sources.common import text
from trainables.sources.rows import read_rows


def read_instruction(cfg: DataConfig, dropped: Counter) -> Iterator[Record]:
    """{instruction, input, output} rows: medAlpaca's WikiDoc, ChatDoctor's sets."""
    for i, row in enumerate(read_rows(cfg.path)):
        if "output" not in row:
            raise DataError(
                f"data.path={cfg.path}: row {i} is not an object with 'instruction', 'input' "
                "and 'output' keys; data.source=instruction wants that shape"
            )
        instruction = text(row.get("instruction")).strip()
        question = text(row.get("input")).strip()
        answer = text(row.get("output"))
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
