"""adapters_kit: many LoRA task adapters hot-swapped on one small encoder (DistilBERT or ALBERT)."""

from .adapters import AdapterStore, LocalStore, RemoteStore, open_store
from .adapters.merge import merge_adapter
from .adapters.portable import resolve_base
from .adapters.store import read_adapter
from .backbones import DEFAULT_BACKBONE, TARGET_PRESETS, Backbone
from .comparison import Comparison, compare
from .devices import resolve_device
from .engine.cache import AdapterCache
from .engine.model import MultiTaskModel
from .errors import (
    AdapterFileError,
    AdaptersKitError,
    BackboneError,
    DataError,
    DeviceError,
    TaskError,
    TrainingError,
    TrainingInterrupted,
    UnknownTaskError,
)
from .tasks import TaskSpec, get_task, list_tasks, load_card, register_task
from .training.loop import TrainConfig, TrainResult, train
from .training.many import TrainJob, train_many

__all__ = [
    "DEFAULT_BACKBONE",
    "TARGET_PRESETS",
    "AdapterCache",
    "AdapterFileError",
    "AdapterStore",
    "AdaptersKitError",
    "Backbone",
    "BackboneError",
    "Comparison",
    "DataError",
    "DeviceError",
    "LocalStore",
    "MultiTaskModel",
    "RemoteStore",
    "TaskError",
    "TaskSpec",
    "TrainConfig",
    "TrainJob",
    "TrainResult",
    "TrainingError",
    "TrainingInterrupted",
    "UnknownTaskError",
    "compare",
    "get_task",
    "list_tasks",
    "load_card",
    "merge_adapter",
    "open_store",
    "read_adapter",
    "register_task",
    "resolve_base",
    "resolve_device",
    "train",
    "train_many",
]
from .version import __version__  # noqa: E402, F401 (the package version)
