"""Setting a run up: seeds, the model with LoRA (the kind's config), what trains,
the optimizer, the step plan and the learning-rate schedule."""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch

from ..errors import TrainingError
from ..tasks.kinds import DEFAULT_KIND, Kind, kind_of
from .config import ResolvedConfig


@dataclass(frozen=True)
class LoraSettings:
    """What a kind's `lora_config` reads (a `ResolvedConfig` has the same fields)."""

    rank: int
    lora_alpha: int
    lora_dropout: float
    targets: str | list[str]
    head: str = "lora"
    use_rslora: bool = False
    use_dora: bool = False


def lora_config(arch: str, num_outputs: int, cfg: Mapping | LoraSettings | ResolvedConfig,
                kind: str | Kind = DEFAULT_KIND):
    """The peft LoraConfig for one of the two head designs (see TrainConfig.head): the kind's.

    `cfg` is a `ResolvedConfig`, a `LoraSettings`, or a dict with `LoraSettings`' keys."""
    if isinstance(cfg, Mapping):
        cfg = LoraSettings(**{f.name: cfg[f.name] for f in fields(LoraSettings) if f.name in cfg})
    return (kind if isinstance(kind, Kind) else kind_of(kind)).lora_config(arch, num_outputs, cfg)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def with_lora(kind: Kind, base: torch.nn.Module, arch: str, run: ResolvedConfig) -> torch.nn.Module:
    """`base` wrapped by peft with the kind's LoRA config, dropout overridden, in train mode."""
    from peft import get_peft_model

    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        model = get_peft_model(base, kind.lora_config(arch, run.task.num_outputs, run))
    if run.dropout is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = run.dropout
    return model.train()


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters that get gradients: LoRA factors and the saved head modules, nothing else.

    The naming rule decides what trains; a config that would train base weights (peft's `bias`,
    a base layer left trainable) is refused, as the adapter files would not hold them."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    wrong = [n for n in params if ".lora_" not in n and ".modules_to_save." not in n]
    if wrong:
        raise TrainingError(
            f"{len(wrong)} base weights would be trained ({', '.join(wrong[:5])}"
            f"{', ...' if len(wrong) > 5 else ''}), and an adapter does not save them: the kind's "
            "lora_config must train only LoRA factors and `modules_to_save` (bias='none'), and "
            "its load_model must not leave base parameters trainable")
    return params


@dataclass(frozen=True)
class Steps:
    """The run's step plan."""

    per_epoch: int
    total: int
    eval_every: int
    warmup: int

    @classmethod
    def plan(cls, run: ResolvedConfig, train_rows: int) -> Steps:
        per_epoch = math.ceil(train_rows / run.batch_size)
        total = max(1, math.ceil(run.epochs * per_epoch))
        return cls(per_epoch=per_epoch, total=total,
                   eval_every=max(1, per_epoch // max(1, run.evals_per_epoch)),
                   warmup=int(run.warmup_ratio * total))


def optimizer_for(params: dict[str, torch.nn.Parameter], run: ResolvedConfig) -> torch.optim.AdamW:
    """AdamW; matrices decay, vectors (biases, norms) do not. With `loraplus_lr_ratio` (LoRA+,
    Hayou et al. 2024) the LoRA B factors form a third group at `learning_rate` x the ratio.

    peft's `create_loraplus_optimizer` also puts every 1-d parameter (biases, DoRA magnitudes)
    in the fast group; here only the B factors are, as in the paper."""
    ratio = getattr(run, "loraplus_lr_ratio", None)
    fast = [p for n, p in params.items() if ratio is not None and ".lora_B." in n]
    fast_ids = {id(p) for p in fast}
    decay = [p for p in params.values() if p.dim() > 1 and id(p) not in fast_ids]
    no_decay = [p for p in params.values() if p.dim() <= 1 and id(p) not in fast_ids]
    groups = [{"params": decay, "weight_decay": run.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if fast:
        groups.append({"params": fast, "weight_decay": run.weight_decay,
                       "lr": run.learning_rate * ratio})
    if getattr(run, "optim", "adamw") == "adamw8bit":
        from .qlora import adamw8bit

        return adamw8bit(groups, run.learning_rate)
    return torch.optim.AdamW(groups, lr=run.learning_rate)


def schedule_for(optimizer: torch.optim.Optimizer, steps: Steps):
    """Linear warmup over `steps.warmup` steps, then linear decay to zero at `steps.total`.

    Not transformers' `get_scheduler("linear")`: that is this schedule one step behind during
    warmup (its first step has rate 0), so it would change every adapter trained with warmup
    (tests/test_training_parts.py shows the rates side by side). From the end of warmup on,
    and with no warmup, the two are the same step for step."""
    warmup, total = steps.warmup, steps.total
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / max(1, warmup), max(0.0, (total - s) / max(1, total - warmup))))
