"""Errors a user can act on.

Every failure a user can cause (bad recipe, missing file, failed numerical check) is an
EdgevitError: the CLI prints its one-line message plus the fix and exits with its code,
never a traceback. Anything else escaping is a bug in edgevit.
"""
from __future__ import annotations


class EdgevitError(Exception):
    """A problem with the user's input or environment, with a hint how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class RecipeError(EdgevitError):
    """A recipe, export profile or calibration manifest is malformed."""


class ModelError(EdgevitError):
    """The model or checkpoint cannot be loaded."""


class DataError(EdgevitError):
    """An image folder or calibration source is unusable."""


class ExportError(EdgevitError):
    """An exporter or runtime failed on a model."""

    exit_code = 3


class CheckFailed(EdgevitError):
    """An exported artifact does not match PyTorch within the stated tolerance."""

    exit_code = 4


class RunnerError(EdgevitError):
    """The device-side runner failed or returned something unreadable."""

    exit_code = 5
