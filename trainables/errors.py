"""Errors about the user's data or model; light to import so the CLI can catch them early."""

from __future__ import annotations

__all__ = ["DataError", "ModelError"]


class DataError(ValueError):
    """A data file or folder that cannot give usable records; the message names it."""


class ModelError(ValueError):
    """A model name that cannot be resolved or loaded; the message names it."""
