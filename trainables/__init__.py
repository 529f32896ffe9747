"""The trainable side of medtune: data → prompt → tokens, model loading, the LoRA trial.

Knows nothing of the CLI or the searcher; `tune` imports from here, never the reverse.
"""

from trainables.config import DataConfig, ModelConfig, TrainConfig
from trainables.data import DataError, Record, load_records, split_records
from trainables.models import ModelError, load_model, load_tokenizer, prepare_model
from trainables.trainable import TrialSettings, train_lora

__all__ = [
    "DataConfig",
    "DataError",
    "ModelConfig",
    "ModelError",
    "Record",
    "TrainConfig",
    "TrialSettings",
    "load_model",
    "load_records",
    "load_tokenizer",
    "prepare_model",
    "split_records",
    "train_lora",
]
