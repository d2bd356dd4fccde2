"""Errors raised at the package's edges. Each message names the bad value and the fix."""


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


class DataWarning(UserWarning):
    """Training data had examples that were skipped (each is named, and counted)."""


def shown(value, limit: int = 60) -> str:
    """A value for an error message, cut short: a request's input is not echoed back whole."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
