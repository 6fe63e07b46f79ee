"""User-facing errors.

Every problem caused by the user's input (a bad file, key, row or option) raises
:class:`UserError` with a one-line message naming the file/key/row and what was expected.
The CLI prints such errors without a traceback and exits with status 2.
"""

from __future__ import annotations


class UserError(Exception):
    """An error in user input: printed as one line, no traceback."""


class ConfigError(UserError):
    """A run configuration key has a bad value."""


class DataError(UserError):
    """A dataset, CSV or cache file is missing, corrupt or has the wrong shape."""


class WeightsError(UserError):
    """Model or embedder weights are missing and cannot be downloaded."""
