"""Errors a user fixes by changing their input: the CLI prints them as one line and exits 2."""

from __future__ import annotations

from search_spaces import SearchSpaceError
from trainables.errors import DataError, ModelError
from tune.config import ConfigError

__all__ = ["USER_ERRORS", "UserError"]


class UserError(ValueError):
    """Bad input found by the sweep or export itself (a results folder, a path)."""


USER_ERRORS = (ConfigError, DataError, ModelError, SearchSpaceError, UserError)
