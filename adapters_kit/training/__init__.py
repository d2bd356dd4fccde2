"""Training: `loop.train` is the recipe (resolve the config, read the data, set up, restore, fit,
save), over `config` (TrainConfig and the resolved config), `data`, `setup` (model with LoRA,
optimizer, schedule), `checkpoint` (resume state), `fit` (the step loop, early stopping),
`evaluate` and `save`; `many.train_many` trains many tasks in one pass over one shared
base (`routing`), in one or several `lanes` side by side; DDP under accelerate
(`distributed`) and the figures (`plots`). Task distillation: `train(..., teacher=...)` over
`teacher`, and `distill`; general distillation of a student base: `general_distill`."""

from ..errors import TrainingInterrupted
from .config import ResolvedConfig, TrainConfig
from .distill import distill
from .loop import TrainResult, lora_config, train
from .many import TrainJob, train_many
from .teacher import Teacher

__all__ = ["ResolvedConfig", "Teacher", "TrainConfig", "TrainResult", "TrainingInterrupted", "TrainJob",
           "distill", "lora_config", "train", "train_many"]
