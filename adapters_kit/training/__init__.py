"""Training: the loop (`loop`: only adapter and head weights train; checkpoints and resume),
DDP under accelerate (`distributed`), and the curves and confusion-matrix figures (`plots`)."""

from .loop import TrainConfig, TrainResult, lora_config, train

__all__ = ["TrainConfig", "TrainResult", "lora_config", "train"]
