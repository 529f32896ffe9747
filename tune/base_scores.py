"""The base model's test scores, kept for the next export that would compute them again.

Export scores the base model and the tuned one on the test split; the base half is the same
for every export of a sweep (`medtune export --trial`, an export after `--resume` extended
the sweep) and for every sweep of the same model on the same data. On a CPU it is minutes
(MedQuAD's 1,639 test examples), so it is computed once and kept in the cache folder beside
the token cache, under a key over everything that changes it: the model's files, the test
examples' tokens, the questions answered, the export's generation settings, the scoring code
and the library versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import peft
import torch
import transformers

import trainables
from trainables.data import Record, fingerprint

__all__ = ["base_scores_key", "read_base_scores", "write_base_scores"]

_FORMAT = 1
_CODE = ("evaluation.py", "loss.py", "prompts.py")  # what computes the scores


def base_scores_key(
    model_path: str,
    test_tokens: str,
    samples: list[Record],
    settings: dict,
) -> str:
    """sha256 over what the base model's test scores depend on. `test_tokens`: the test
    split's token-cache key (its records, tokenizer, max_length and system prompt);
    `settings`: the export's own (batch size, max_new_tokens, whether decisions are read)."""
    code = hashlib.sha256()
    for name in _CODE:
        code.update((Path(trainables.__file__).parent / name).read_bytes())
    parts = {
        "format": _FORMAT,
        "code": code.hexdigest(),
        "model": _model_fingerprint(model_path),
        "test_tokens": test_tokens,
        "samples": fingerprint(samples),
        "settings": settings,
        "versions": [torch.__version__, transformers.__version__, peft.__version__],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def read_base_scores(cache_dir: Path, key: str) -> dict | None:
    """The scores kept under `key`, or None (none kept, or a file that cannot be read)."""
    try:
        return json.loads((cache_dir / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None


def write_base_scores(cache_dir: Path, key: str, scores: dict) -> None:
    """Keep `scores` (with when they were made) under `key`, renamed into place."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    body = json.dumps({**scores, "scored_at": time.strftime("%Y-%m-%d %H:%M")})
    fd, tmp = tempfile.mkstemp(prefix=f".{key}-", suffix=".json", dir=cache_dir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, cache_dir / f"{key}.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _model_fingerprint(model_path: str) -> dict:
    """A model folder's config files by content and its weight files by name, size and
    modification time (hashing gigabytes of weights would cost much of what the cache
    saves). A hub name is read as the snapshot folder the Hugging Face cache holds for it
    (named by its commit), or taken as it is where there is none."""
    folder = Path(model_path)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model_path, local_files_only=True))
        except Exception:  # noqa: BLE001 - no snapshot here: the name is all there is
            return {"name": model_path}
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json" or path.name.endswith(".jinja"):
            files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_file():
            stat = path.stat()
            files[path.name] = [stat.st_size, stat.st_mtime_ns]
    return {"path": str(folder.resolve()), "files": files}
