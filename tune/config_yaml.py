"""A resolved config as YAML with every key and what it does: `medtune config`.

The output is a config file `medtune sweep --config` reads back to the same sweep: every key
of every section, defaults included, each under a comment from its field's description (and
its choices, where the type fixes them). Secrets are masked as in the results folder's
`medtune.yaml`.
"""

from __future__ import annotations

import textwrap
import typing

import yaml

from tune.config import SweepConfig
from tune.redact import redact

__all__ = ["commented_yaml"]

_WIDTH = 100


def commented_yaml(cfg: SweepConfig) -> str:
    """Every section and key of `cfg`, in declaration order, each key under its description."""
    values = redact(cfg.model_dump(mode="json"))
    lines = [
        "# Every key of a medtune sweep with its value, written by `medtune config`;",
        "# run it with `medtune sweep --config FILE`.",
    ]
    for section in type(cfg).model_fields:
        lines.append(f"{section}:")
        model = getattr(cfg, section)
        for key, info in type(model).model_fields.items():
            lines.extend(_comment(info.description, _choices(info.annotation), indent="  "))
            dumped = yaml.safe_dump(
                {key: values[section][key]}, default_flow_style=False, sort_keys=False, width=1000
            )
            lines.extend("  " + line for line in dumped.rstrip("\n").splitlines())
    return "\n".join(lines) + "\n"


def _choices(annotation) -> list[str]:
    """The values a Literal type allows (inside Optional too), else none."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Literal:
            return [str(v) for v in typing.get_args(arg)]
    return []


def _comment(description: str | None, choices: list[str], indent: str) -> list[str]:
    text = (description or "").strip()
    if choices and not all(c in text for c in choices):
        text = f"{text} One of: {', '.join(choices)}.".strip()
    if not text:
        return []
    return textwrap.wrap(
        text, width=_WIDTH, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# "
    )
