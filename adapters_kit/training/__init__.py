"""Training: `loop.train` is the recipe (resolve the config, read the data, set up, restore, fit,
save), over `config` (TrainConfig and the resolved config), `data`, `setup` (model with LoRA,
optimizer, schedule), `checkpoint` (resume state), `fit` (the step loop, early stopping),
`evaluate` and `save`; DDP under accelerate (`distributed`) and the figures (`plots`)."""

from ..errors import TrainingInterrupted
from .config import ResolvedConfig, TrainConfig
from .loop import TrainResult, lora_config, train

__all__ = ["ResolvedConfig", "TrainConfig", "TrainResult", "TrainingInterrupted", "lora_config", "train"]
