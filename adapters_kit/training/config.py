"""What a run trains with: `TrainConfig` (what the caller asks; None takes the task card's value)
and `ResolvedConfig` (every value settled from the card, checked once, frozen)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..backbones import DEFAULT_BACKBONE
from ..devices import TRAINING_PRECISIONS, precision_problem, resolve_device, training_precision
from ..errors import ConfigError, DeviceError, shown
from ..tasks import TaskSpec

CARD_DEFAULTS = ("epochs", "learning_rate", "batch_size", "rank", "lora_alpha", "lora_dropout",
                 "targets", "max_length")
"""The TrainConfig fields that take the task card's value when left as None."""
OPTIMIZERS = ("adamw", "adamw8bit")


@dataclass
class TrainConfig:
    """How to train. Fields left as None take the task card's defaults."""

    backbone: str = DEFAULT_BACKBONE
    epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    rank: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    targets: str | None = None
    """LoRA target preset: `qv`, `attention` or `all-linear`."""
    max_length: int | None = None
    head: str = "lora"
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
    engine refuses them, since it computes plain LoRA only."""
    dropout: float | None = None
    """Override every dropout of the backbone and head during training (None keeps the model's)."""
    max_train_examples: int | None = None
    class_weights: str | dict[str, float] | None = None
    """Overrides the card's `class_weights`: `balanced`, `none`, or a dict label -> weight."""
    seed: int = 0
    evals_per_epoch: int = 2
    patience: int = 4
    """Stop after this many evaluations without a better dev metric."""
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    precision: str = "auto"
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
    quantize: str | None = None
    """QLoRA: train on a bitsandbytes base, `8bit` (LLM.int8) or `4bit` (NF4); None: the
    full-precision base. Head modules stay full precision (see `backbones.quantize`); the adapter
    records the unquantized base's fingerprint and this quantization. Needs the `quant` extra."""
    double_quant: bool = False
    """With `quantize="4bit"`: also quantize the blocks' scales (QLoRA's double quantization)."""
    optim: str = "adamw"
    """`adamw` (torch) or `adamw8bit` (bitsandbytes' 8-bit AdamW: its two moments in 8 bits)."""
    threads: int | None = None
    progress: bool = True
    resume: bool = True
    baseline: bool = True
    overwrite: bool = False

    def resolved(self, spec: TaskSpec) -> ResolvedConfig:
        """This config over `spec`'s defaults, checked: a ConfigError lists every bad value."""
        values = asdict(self)
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
            raise ConfigError("the training config is invalid (fix these TrainConfig fields or the "
                              "card's [defaults]):\n  - " + "\n  - ".join(problems))
        task = spec
        if (values["class_weights"], values["max_length"]) != (spec.class_weights, spec.max_length):
            # validated as a card's would be
            task = TaskSpec(**{**spec.to_dict(), "class_weights": values["class_weights"],
                               "max_length": values["max_length"]})
        return ResolvedConfig(**values, task=task)


@dataclass(frozen=True)
class ResolvedConfig:
    """A run's settings, every one settled: `TrainConfig`'s fields with the card's defaults
    filled in, `precision` decided for this machine, and the task as trained. `train` reads
    only this; `task.json` records it (`record`) and the checkpoint key hashes it."""

    backbone: str
    epochs: float
    learning_rate: float
    batch_size: int
    rank: int
    lora_alpha: int
    lora_dropout: float
    targets: str | list[str]
    max_length: int
    head: str
    use_rslora: bool
    loraplus_lr_ratio: float | None
    use_dora: bool
    dropout: float | None
    max_train_examples: int | None
    class_weights: str | dict[str, float] | None
    """The weights asked for (`balanced`, a table, or None); the values used are in the result."""
    seed: int
    evals_per_epoch: int
    patience: int
    warmup_ratio: float
    weight_decay: float
    precision: str
    """`fp32`, `bf16` or `fp16` (`auto` decided for the device)."""
    device: str
    """The device trained on, e.g. `cpu` or `cuda:0` (`auto` decided)."""
    max_seconds: float | None
    quantize: str | None
    double_quant: bool
    optim: str
    threads: int | None
    progress: bool
    resume: bool
    baseline: bool
    overwrite: bool
    task: TaskSpec
    """The task as trained: the card with this run's `class_weights` and `max_length`."""

    def settings(self, leave_out: tuple[str, ...] = ()) -> dict:
        """The settings as a plain dict (`task` apart), in field order, without `leave_out`."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "task" and f.name not in leave_out}

    def record(self) -> dict:
        """What `task.json` keeps under `training`."""
        return self.settings(leave_out=("progress", "overwrite"))


def _problems(v: dict) -> list[str]:
    def integer(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    out = []
    if v["head"] not in ("lora", "full"):
        out.append(f"head {shown(v['head'])} must be 'lora' or 'full'")
    if v["quantize"] not in (None, "8bit", "4bit"):
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
