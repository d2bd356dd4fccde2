"""Errors raised at the package's edges. Each message names the bad value and the fix."""

from __future__ import annotations


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


class DeviceError(AdaptersKitError, ValueError):
    """A device setting names no device this machine has (or is not a device name)."""


class ConfigError(AdaptersKitError, ValueError):
    """A training setting is out of range or of the wrong type; every problem is listed."""


class TrainingError(AdaptersKitError, RuntimeError):
    """A training run cannot go on as it was set up (the message says what to change)."""


class TrainingInterrupted(AdaptersKitError):
    """Training stopped on request (`train(..., stop_after_step=N)`) before saving an adapter.

    `checkpoint` is the directory a later `train` with the same settings resumes from (None
    when no evaluation had been checkpointed yet: the next run starts afresh); `step` is the
    last step taken."""

    def __init__(self, message: str, *, step: int, total_steps: int, checkpoint=None) -> None:
        super().__init__(message)
        self.step, self.total_steps, self.checkpoint = step, total_steps, checkpoint

    def __reduce__(self):  # keyword-only fields: pickled errors (multiprocessing) keep them
        return _interrupted, (self.args[0], self.step, self.total_steps, self.checkpoint)


def _interrupted(message, step, total_steps, checkpoint):
    return TrainingInterrupted(message, step=step, total_steps=total_steps, checkpoint=checkpoint)


class DataWarning(UserWarning):
    """Training data had examples that were skipped (each is named, and counted)."""


def shown(value, limit: int = 60) -> str:
    """A value for an error message, cut short: a request's input is not echoed back whole."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
