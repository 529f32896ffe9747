"""The trainable side of medtune: data → prompt → tokens, model loading, the LoRA trial.

Knows nothing of the CLI or the searcher; `tune` imports from here, never the reverse.
Names load on first use (PEP 562), so `from trainables.config import ...` does not pull in
torch, transformers and Ray: the CLI rejects a typo in a config before those load.
"""

from importlib import import_module

_EXPORTS = {
    "DataConfig": "trainables.config",
    "ModelConfig": "trainables.config",
    "TrainConfig": "trainables.config",
    "DataError": "trainables.errors",
    "ModelError": "trainables.errors",
    "Record": "trainables.data",
    "load_records": "trainables.data",
    "split_records": "trainables.data",
    "load_model": "trainables.models",
    "load_tokenizer": "trainables.models",
    "prepare_model": "trainables.models",
    "TrialSettings": "trainables.trainable",
    "train_lora": "trainables.trainable",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
