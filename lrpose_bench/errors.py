"""The suite's own error type.

Every problem a user can fix (bad file, bad option, bad config) is raised as :class:`UserError` with
one readable line that names the file/field and says what to do. The CLI prints that line and exits
with status 2 (``--debug``: the traceback); anything else is a bug and shows its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one clear line (no traceback)."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if self.hint is None else f"{self.message}; {self.hint}"


class DataError(UserError):
    """Annotation files, images or boxes that cannot be used."""


class ConfigError(UserError):
    """Unknown keys, wrong types, unknown names in a configuration or on the command line."""


class CheckpointError(UserError):
    """A checkpoint that is truncated, foreign, or from another method/backbone."""


class TrainingDiverged(Exception):
    """A non-finite loss; the cell is marked failed and the run goes on with the next cell."""
