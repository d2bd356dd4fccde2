"""adapters_kit: many LoRA task adapters hot-swapped on one small encoder (DistilBERT or ALBERT)."""

from .backbones import DEFAULT_BACKBONE, TARGET_PRESETS, Backbone
from .cache import AdapterCache
from .errors import (
    AdapterFileError,
    AdaptersKitError,
    BackboneError,
    DataError,
    TaskError,
    TrainingError,
    TrainingInterrupted,
    UnknownTaskError,
)
from .merge import merge_adapter
from .runtime import MultiTaskModel
from .store import AdapterStore, read_adapter
from .tasks import TaskSpec, get_task, list_tasks, load_card, register_task
from .train import TrainConfig, TrainResult, train

__all__ = [
    "DEFAULT_BACKBONE",
    "TARGET_PRESETS",
    "AdapterCache",
    "AdapterFileError",
    "AdapterStore",
    "AdaptersKitError",
    "Backbone",
    "BackboneError",
    "DataError",
    "MultiTaskModel",
    "TaskError",
    "TaskSpec",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "TrainingInterrupted",
    "UnknownTaskError",
    "get_task",
    "list_tasks",
    "load_card",
    "merge_adapter",
    "read_adapter",
    "register_task",
    "train",
]
__version__ = "0.1.0"
