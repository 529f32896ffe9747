"""Keep credentials out of what medtune writes: results folders, model cards, error lines.

    yaml.safe_dump(redact(cfg.model_dump(mode="json")))

A value is secret when its key names one (token, secret, password, api_key, credentials, ...),
when it holds the value of such an environment variable (HF_TOKEN, HUGGING_FACE_HUB_TOKEN,
WANDB_API_KEY, ...), or when it looks like a Hugging Face token; URLs lose their
`user:password@` and key-carrying query parameters (`?secret_key=...`). Secrets become `***`.
"""

from __future__ import annotations

import os
import re

__all__ = ["MASK", "is_secret_key", "redact", "redact_text"]

MASK = "***"
# Whole words of a key, so tokens_per_second and TOKENIZERS_PARALLELISM are not secrets; not
# "pwd": $PWD is the working directory, and masking it hid every path in error messages.
_SECRET_KEY = re.compile(
    r"(^|_)(token|secret|password|passwd|apikey|api_key|access_key|private_key|"
    r"credentials?|auth)(_|$)"
)
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][\w+.-]*://)[^\s/@:]+:[^\s/@]+@")
# URL query parameters that carry keys (pyarrow's s3://...?access_key=...&secret_key=...).
_URL_QUERY_SECRET = re.compile(
    r"([?&][\w.-]*(?:token|secret|password|access_key|api_key)[\w.-]*=)[^&\s#]+", re.IGNORECASE
)
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
_MIN_SECRET = 8  # shorter environment values ("1", "true") would mask ordinary text


def is_secret_key(key: str) -> bool:
    words = re.sub(r"[^a-z0-9]+", "_", str(key).lower())
    return bool(_SECRET_KEY.search(words))


def redact_text(text: str) -> str:
    """`text` with secret environment values, URL credentials and HF tokens masked."""
    for value in _secret_values():
        text = text.replace(value, MASK)
    text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    text = _URL_QUERY_SECRET.sub(rf"\1{MASK}", text)
    return _HF_TOKEN.sub(f"hf_{MASK}", text)


def redact(data):
    """A copy of plain data (dicts, lists, strings) with every secret masked."""
    if isinstance(data, dict):
        return {
            k: (MASK if is_secret_key(k) and v not in (None, "") else redact(v))
            for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return type(data)(redact(v) for v in data)
    if isinstance(data, str):
        return redact_text(data)
    return data


def _secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if is_secret_key(k) and len(v) >= _MIN_SECRET}
    return sorted(values, key=len, reverse=True)  # longest first: no half-masked values
