"""Errors a user fixes by changing their input: the CLI prints them as one line and exits 2."""

from __future__ import annotations

from search_spaces import SearchSpaceError
from trainables.errors import DataError, ModelError
from tune.config import ConfigError

__all__ = ["USER_ERRORS", "RayStartError", "UserError"]


class UserError(ValueError):
    """Bad input found by the sweep or export itself (a results folder, a path)."""


class RayStartError(RuntimeError):
    """Ray could not be started on this machine (not the user's input: the CLI exits 1)."""


USER_ERRORS = (ConfigError, DataError, ModelError, SearchSpaceError, UserError)
