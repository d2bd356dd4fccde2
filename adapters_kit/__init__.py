"""adapters_kit: many LoRA task adapters hot-swapped on one small encoder (DistilBERT or ALBERT)."""

from .adapters.merge import merge_adapter
from .adapters.store import AdapterStore, read_adapter
from .backbones import DEFAULT_BACKBONE, TARGET_PRESETS, Backbone
from .comparison import Comparison, compare
from .engine.cache import AdapterCache
from .engine.model import MultiTaskModel
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
from .tasks import TaskSpec, get_task, list_tasks, load_card, register_task
from .training.loop import TrainConfig, TrainResult, train

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
    "MultiTaskModel",
    "TaskError",
    "TaskSpec",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "TrainingInterrupted",
    "UnknownTaskError",
    "compare",
    "get_task",
    "list_tasks",
    "load_card",
    "merge_adapter",
    "read_adapter",
    "register_task",
    "train",
]
__version__ = "0.1.0"
