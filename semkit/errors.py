"""Errors raised on bad input.

Every error about a user's file names that file, so a batch over thousands of images says which one is at
fault instead of failing deep inside a library.
"""

from __future__ import annotations

from os import PathLike


class InputError(ValueError):
    """A user-supplied file or array cannot be used as it is.

    Args:
        message: What is wrong, in words a user can act on.
        path: The offending file, if there is one; it is prefixed to the message.
    """

    def __init__(self, message: str, path: str | PathLike | None = None):
        self.path = None if path is None else str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
