"""Errors raised at the package's edges. Each message names the bad value and the fix."""

from __future__ import annotations

from pathlib import Path


class AdaptersKitError(Exception):
    """Base class: every error this package raises on purpose."""


class TaskError(AdaptersKitError, ValueError):
    """A task name, task card or task spec is wrong."""


class DataError(AdaptersKitError, ValueError):
    """A dataset is missing, unreadable, or does not fit its task."""


class BackboneError(AdaptersKitError, ValueError):
    """A backbone cannot be loaded or is not a supported architecture."""


class AdapterFileError(AdaptersKitError, ValueError):
    """An adapter directory is corrupt, foreign, or unsafe; nothing was loaded from it."""


class UnknownTaskError(AdaptersKitError, KeyError):
    """A task name that is not loaded in the engine (a KeyError too, as a missing key is)."""

    def __str__(self) -> str:  # KeyError's would quote the sentence
        return str(self.args[0]) if self.args else ""


class TrainingError(AdaptersKitError, RuntimeError):
    """Training cannot run as set up (e.g. base weights would get gradients)."""


class TrainingInterrupted(AdaptersKitError):
    """Training stopped on request (`train(stop_after_step=...)`) before the adapter was written.

    `checkpoint` holds the last checkpoint (None if none was written yet); training the same
    task into the same `out_dir` again resumes from it.
    """

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


class DataWarning(UserWarning):
    """Training data had examples that were skipped (each is named, and counted)."""


def shown(value, limit: int = 60) -> str:
    """A value for an error message, cut short: a request's input is not echoed back whole."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
