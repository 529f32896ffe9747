"""MedQuAD: the XML tree as cloned (folder or .tar.gz), or the CSV that hub copies ship."""

from __future__ import annotations

import io
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from trainables.config import DataConfig
from trainables.data import Record, normalize_question, normalize_text
from trainables.errors import DataError
from trainables.sources.common import is_table, require_columns, text
from trainables.sources.rows import read_rows


def read_medquad(cfg: DataConfig, dropped: Counter) -> Iterator[Record]:
    """MedQuAD as cloned (XML folder), as its .tar.gz, or as the CSV hub copies ship."""
    if is_table(cfg.path):
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
    require_columns(path, rows, {"Question": shape, "Answer": shape})
    for i, row in enumerate(rows):
        question = normalize_text(text(row.get("Question")))
        # Hub copies drop the focus, so the question is the group: a paraphrase under another
        # focus can land in another split (the XML tree keeps it; prefer it where you can).
        yield Record(
            id=f"row-{i}",
            question=question,
            answer=normalize_text(text(row.get("Answer"))),
            group=normalize_question(question),
            source="medquad/csv",
        )


def _xml_files(p: Path) -> Iterator[tuple[str, bytes]]:
    if p.is_dir():
        for f in sorted(p.rglob("*.xml")):
            yield str(f), f.read_bytes()
    elif p.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            # Read in archive order, then sort: extracting in name order would seek backwards
            # in the gzip stream, which decompresses it again from the start.
            with tarfile.open(p) as tar:
                files = [
                    (m.name, tar.extractfile(m).read())
                    for m in tar
                    if m.isfile() and m.name.endswith(".xml")
                ]
            yield from sorted(files)
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
