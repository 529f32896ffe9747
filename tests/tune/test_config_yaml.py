"""`medtune config`: every key with its value and description, as YAML a sweep reads back."""

import subprocess
import sys
from pathlib import Path

import yaml

from tune.config import SweepConfig, load_config

MEDTUNE = str(Path(sys.executable).parent / "medtune")
OVERRIDES = [
    "train.max_steps=12",
    "resources.custom={trainer: 1}",
    "model.lora_target_modules=[q_proj, v_proj]",
]


def medtune_config(*args, cwd):
    return subprocess.run(
        [MEDTUNE, "config", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def sections(text: str) -> dict[str, list[str]]:
    """The output's lines under each top-level key."""
    out, current = {}, None
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            current = out.setdefault(line.rstrip(":"), [])
        elif current is not None:
            current.append(line)
    return out


def comment_above(lines: list[str], key: str) -> str:
    """The comment lines right above `key` in a section, joined into one text."""
    at = next(i for i, ln in enumerate(lines) if ln == f"  {key}:" or ln.startswith(f"  {key}: "))
    above = []
    for line in reversed(lines[:at]):
        if not line.startswith("  # "):
            break
        above.insert(0, line.removeprefix("  # "))
    return " ".join(above)


def test_every_key_is_printed_under_its_description_and_reads_back_as_the_same_config(tmp_path):
    proc = medtune_config(*OVERRIDES, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = load_config(None, OVERRIDES)
    assert yaml.safe_load(proc.stdout) == expected.model_dump(mode="json")
    printed = sections(proc.stdout)
    assert list(printed) == list(SweepConfig.model_fields)
    for section, lines in printed.items():
        for key, info in type(getattr(expected, section)).model_fields.items():
            assert info.description, f"{section}.{key} has no description"
            assert " ".join(info.description.split()) in comment_above(lines, key), (section, key)
    # Where a description does not name a Literal's choices, the comment does.
    assert comment_above(printed["model"], "quantization").endswith("One of: none, 4bit.")
    # The file, given back, is the same sweep and prints the same text.
    saved = tmp_path / "resolved.yaml"
    saved.write_text(proc.stdout)
    assert load_config(saved) == expected
    again = medtune_config("--config", str(saved), cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == proc.stdout


def test_secrets_are_masked_as_in_the_saved_config(tmp_path):
    proc = medtune_config("run.mlflow_uri=https://alice:s3cr3t-pw@mlflow.example/", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "s3cr3t-pw" not in proc.stdout
    assert yaml.safe_load(proc.stdout)["run"]["mlflow_uri"] == "https://***@mlflow.example/"
