"""What a run trains with: `TrainConfig` (what the caller asks; None takes the task card's value)
and `ResolvedConfig` (the same fields, every value settled from the card and checked, with the
task as trained). Each field's docstring is also its command-line flag's help."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, get_args

from ..backbones import DEFAULT_BACKBONE
from ..devices import (
    TRAINING_PRECISIONS,
    TrainingPrecision,
    precision_problem,
    resolve_device,
    training_precision,
)
from ..errors import ConfigError, DeviceError, shown
from ..tasks import TaskSpec

CARD_DEFAULTS = ("epochs", "learning_rate", "batch_size", "rank", "lora_alpha", "lora_dropout",
                 "targets", "max_length")
"""The TrainConfig fields that take the task card's value when left as None."""
Head = Literal["lora", "full"]
TargetPreset = Literal["qv", "attention", "all-linear"]
Quantize = Literal["8bit", "4bit"]
Optimizer = Literal["adamw", "adamw8bit"]
OPTIMIZERS = get_args(Optimizer)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Fields left as None take the task card's defaults; `resolved` refuses bad
    values (they may depend on the card and the device), all of them in one ConfigError.
    Frozen: `dataclasses.replace` makes a changed copy."""

    backbone: str = DEFAULT_BACKBONE
    """The base model: `embedded-distilbert`, `embedded-albert`, a hub name or a model folder."""
    epochs: float | None = None
    """Passes over the training data, a fraction allowed (None: the card's)."""
    learning_rate: float | None = None
    """AdamW's peak learning rate, reached after the warmup (None: the card's)."""
    batch_size: int | None = None
    """Training rows per optimizer step (None: the card's)."""
    rank: int | None = None
    """LoRA rank r of every adapted linear (None: the card's)."""
    lora_alpha: int | None = None
    """LoRA scale numerator: the update is scaled by lora_alpha / rank (None: the card's)."""
    lora_dropout: float | None = None
    """Dropout on the LoRA path's input, in [0, 1) (None: the card's)."""
    targets: TargetPreset | list[str] | None = None
    """LoRA target preset: `qv`, `attention` or `all-linear` (None: the card's; a card may also
    list module-name suffixes)."""
    max_length: int | None = None
    """Word pieces per row; longer inputs are cut (None: the card's)."""
    head: Head = "lora"
    """`lora`: the head's dense layer stays frozen and gets a LoRA update (small files).
    `full`: the dense layer is trained and saved whole (the naive design, for comparison)."""
    use_rslora: bool = False
    """rsLoRA: scale the LoRA product by lora_alpha / sqrt(rank) instead of lora_alpha / rank
    (steadier at high ranks). Served by the engine like any LoRA."""
    loraplus_lr_ratio: float | None = None
    """LoRA+: train the B factors at learning_rate x this ratio (the paper suggests 16). The
    saved adapter is plain LoRA."""
    use_dora: bool = False
    """DoRA (weight-decomposed LoRA): plain peft loads and runs these adapters; the serving
    engine refuses them, since it computes plain LoRA only. Sequence tasks need head `full`."""
    dropout: float | None = None
    """Override every dropout of the backbone and head during training (None keeps the model's)."""
    max_train_examples: int | None = None
    """Train on at most this many rows, a seeded sample (None: every row)."""
    class_weights: str | dict[str, float] | None = None
    """Weigh the loss by class: `balanced`, `none`, or label -> weight (on the command line
    LABEL=W,LABEL=W); None: the card's `class_weights`, else none."""
    seed: int = 0
    """Seed of the sampling, the shuffling, the head's initialisation and dropout."""
    evals_per_epoch: int = 2
    """Dev-set evaluations per epoch; each may keep a new best checkpoint."""
    patience: int = 4
    """Stop after this many evaluations without a better dev metric."""
    warmup_ratio: float = 0.06
    """Share of the steps over which the learning rate warms up linearly, in [0, 1)."""
    weight_decay: float = 0.01
    """AdamW's weight decay on the trained weights."""
    precision: TrainingPrecision = "auto"
    """Training matmul precision: `fp32`, `bf16` (autocast; weights and optimizer stay fp32),
    `fp16` (CUDA only, with a grad scaler), or `auto`: on a GPU bf16 where it runs natively
    (A100, H100, ...) else fp16; on the CPU bf16 where native (AVX512-BF16/AMX) else fp32.
    Evaluation and saved weights are always fp32."""
    device: str = "auto"
    """Where to train: `auto` (a GPU when one is visible, else the CPU; the choice is logged
    and recorded), `cpu`, `cuda` or `cuda:N`. Under `accelerate launch` `auto` and `cuda`
    mean each process's own GPU."""
    max_seconds: float | None = None
    """Stop training (keeping the best checkpoint so far) after this many seconds."""
    quantize: Quantize | None = None
    """QLoRA: train on a bitsandbytes base, `8bit` (LLM.int8) or `4bit` (NF4); None: the
    full-precision base. Head modules stay full precision (see `backbones.quantize`); the adapter
    records the unquantized base's fingerprint and this quantization. Needs the `quant` extra
    (README, Quantized bases)."""
    double_quant: bool = False
    """With `quantize` 4bit: also quantize the blocks' scales (QLoRA's double quantization)."""
    optim: Optimizer = "adamw"
    """`adamw` (torch) or `adamw8bit` (bitsandbytes' 8-bit AdamW: its two moments in 8 bits)."""
    threads: int | None = None
    """torch threads per process (None: every core; under `accelerate launch`, cores /
    processes)."""
    progress: bool = True
    """Show a progress bar on stderr."""
    resume: bool = True
    """Resume an interrupted run from its checkpoint (off: start again, ignoring it)."""
    baseline: bool = True
    """Also train and score the TF-IDF + logistic regression baseline on the same split."""
    overwrite: bool = False
    """Replace an existing adapter directory."""

    def settings(self, leave_out: tuple[str, ...] = ()) -> dict:
        """The TrainConfig fields as a plain dict, in field order, without `leave_out`."""
        return {f.name: getattr(self, f.name) for f in fields(TrainConfig) if f.name not in leave_out}

    def resolved(self, spec: TaskSpec) -> ResolvedConfig:
        """This config over `spec`'s defaults, checked: a ConfigError lists every bad value."""
        values = self.settings()
        for k in CARD_DEFAULTS:
            if values[k] is None:
                values[k] = getattr(spec, k)
        if self.class_weights is None:
            values["class_weights"] = spec.class_weights
        problems = _problems(values)
        try:
            device = resolve_device(values["device"])
        except DeviceError as e:
            problems.append(str(e))
        else:
            values["device"] = str(device)
            if values["precision"] in TRAINING_PRECISIONS:
                values["precision"] = training_precision(values["precision"], device)
                bad = precision_problem(values["precision"], device)
                if bad:
                    problems.append(bad)
        if problems:
            _refuse(problems)
        task = spec
        if (values["class_weights"], values["max_length"]) != (spec.class_weights, spec.max_length):
            # validated as a card's would be
            task = TaskSpec(**{**spec.to_dict(), "class_weights": values["class_weights"],
                               "max_length": values["max_length"]})
        return ResolvedConfig(**values, task=task)


@dataclass(frozen=True)
class ResolvedConfig(TrainConfig):
    """A run's settings, every one settled: `TrainConfig`'s fields (not restated here) with the
    card's defaults filled in, `precision` and `device` decided for this machine (`fp32`, `bf16`
    or `fp16`; e.g. `cpu` or `cuda:0`), `class_weights` the weights asked for (the values used
    are in the result), and the task as trained. Made by `TrainConfig.resolved`; `train` reads
    only this; `task.json` records it (`record`) and the checkpoint key hashes it."""

    task: TaskSpec | None = None
    """The task as trained: the card with this run's `class_weights` and `max_length`."""

    def __post_init__(self) -> None:
        if not isinstance(self.task, TaskSpec):
            raise ConfigError(f"task {shown(self.task)} is not a TaskSpec; a ResolvedConfig comes "
                              "from TrainConfig(...).resolved(spec)")
        problems = _problems(self.settings())
        if problems:
            _refuse(problems)

    def record(self) -> dict:
        """What `task.json` keeps under `training`."""
        return self.settings(leave_out=("progress", "overwrite"))


def _refuse(problems: list[str]):
    raise ConfigError("the training config is invalid (fix these TrainConfig fields or the "
                      "card's [defaults]):\n  - " + "\n  - ".join(problems))


def _problems(v: dict) -> list[str]:
    def integer(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    out = []
    if v["head"] not in get_args(Head):
        out.append(f"head {shown(v['head'])} must be 'lora' or 'full'")
    if v["quantize"] is not None and v["quantize"] not in get_args(Quantize):
        out.append(f"quantize {shown(v['quantize'])} must be '8bit', '4bit' or None")
    if v["double_quant"] not in (True, False) or (v["double_quant"] and v["quantize"] != "4bit"):
        out.append(f"double_quant {shown(v['double_quant'])} must be a bool, and True only with "
                   "quantize='4bit'")
    if v["optim"] not in OPTIMIZERS:
        out.append(f"optim {shown(v['optim'])} must be one of {list(OPTIMIZERS)}")
    if v["precision"] not in TRAINING_PRECISIONS:
        out.append(f"precision {shown(v['precision'])} must be 'auto', 'fp32', 'bf16' or 'fp16'")
    for k, lo in (("batch_size", 1), ("rank", 1), ("lora_alpha", 1), ("evals_per_epoch", 1),
                  ("patience", 1), ("max_length", 8)):
        if not integer(v[k]) or v[k] < lo:
            out.append(f"{k} must be an integer >= {lo}, got {shown(v[k])}")
    for k in ("threads", "max_train_examples"):
        if v[k] is not None and (not integer(v[k]) or v[k] < 1):
            out.append(f"{k} {shown(v[k])} must be at least 1 (or None for "
                       + ("all cores)" if k == "threads" else "every row)"))
    for k in ("use_rslora", "use_dora"):
        if not isinstance(v[k], bool):
            out.append(f"{k} must be True or False, got {shown(v[k])}")
    ratio = v["loraplus_lr_ratio"]
    if ratio is not None and (not number(ratio) or not ratio > 0):
        out.append(f"loraplus_lr_ratio must be a positive number such as 16 (or None for plain "
                   f"LoRA), got {shown(ratio)}")
    if not integer(v["seed"]):
        out.append(f"seed must be an integer, got {shown(v['seed'])}")
    for k in ("epochs", "learning_rate"):
        if not number(v[k]) or not v[k] > 0:
            out.append(f"{k} must be a positive number, got {shown(v[k])}")
    if v["max_seconds"] is not None and (not number(v["max_seconds"]) or not v["max_seconds"] > 0):
        out.append(f"max_seconds must be a positive number (or None), got {shown(v['max_seconds'])}")
    if not number(v["weight_decay"]) or not v["weight_decay"] >= 0:
        out.append(f"weight_decay must be >= 0, got {shown(v['weight_decay'])}")
    for k in ("warmup_ratio", "lora_dropout", "dropout"):
        if k == "dropout" and v[k] is None:  # None keeps the model's own
            continue
        if not number(v[k]) or not 0 <= v[k] < 1:
            out.append(f"{k} must be in [0, 1), got {shown(v[k])}")
    return out
