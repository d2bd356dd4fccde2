"""One frozen encoder that trains many tasks' LoRA factors in one pass: the serving bank's slot
idea (engine/lora_bank.py) with gradients.

Each task keeps its own peft model (its LoRA layers, its head), with the base weights tied to
the one shared base, so it evaluates and saves exactly as `train`'s does. The shared encoder's
adapted linears are `RoutedLinear`s: a pass's rows are grouped by task, and each group goes
through its task's own peft layer. With one group, the task's peft layer runs on the whole
batch, as in `train` (the same ops, the same dropout draws). With several, the frozen base
runs once on every row and each group adds its task's LoRA product on a view of its rows.

The heads run per task: `task_outputs` calls the task's own peft model on its rows with its
encoder answered from the shared pass, so the head code is transformers' own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..backbones import OUTPUT_LAYERS, encoder

ADAPTER = "default"
"""The peft adapter name of every task model (one adapter per model)."""


class Router(threading.local):
    """The current pass's groups: (member index, first row, end row), rows of a task together,
    the groups in row order and covering the pass. Each thread has its own (a `train_many`
    lane runs its passes while another lane runs its own)."""

    def __init__(self) -> None:
        self.groups: tuple[tuple[int, int, int], ...] = ()

    @contextlib.contextmanager
    def route(self, groups: Sequence[tuple[int, int, int]]) -> Iterator[None]:
        self.groups = tuple(groups)
        try:
            yield
        finally:
            self.groups = ()


def _plain_lora(layer: nn.Module) -> bool:
    """A peft LoRA linear whose only adapter is plain LoRA (no DoRA or other variant), active
    and unmerged: its product can be added to a base output computed for the whole pass."""
    from peft.tuners.lora import LoraLayer

    return (isinstance(layer, LoraLayer) and ADAPTER in layer.lora_A
            and ADAPTER not in getattr(layer, "lora_variant", {}) and not layer.merged
            and not layer.disable_adapters and list(layer.active_adapters) == [ADAPTER])


def lora_product(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What peft's LoRA linear adds to its base output for `x` (its dropout, A, B, scaling)."""
    a, b = layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]
    x = layer._cast_input_dtype(x, a.weight.dtype)
    return b(a(layer.lora_dropout[ADAPTER](x))) * layer.scaling[ADAPTER]


class RoutedLinear(nn.Module):
    """A frozen linear of the shared encoder; each task's rows go through that task's layer.

    `layers[i]`: task i's module at this path: its peft LoRA linear, a trained copy (peft's
    `modules_to_save`), or None when task i does not adapt this layer (the base serves it)."""

    def __init__(self, base: nn.Linear, router: Router) -> None:
        super().__init__()
        self.base = base
        self.router = router
        self.layers: list[nn.Module | None] = []  # a plain list: the tasks' modules are theirs

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.router.groups
        if len(groups) == 1:  # one task: its own layer on the whole batch, exactly as `train`
            layer = self.layers[groups[0][0]]
            return self.base(x) if layer is None else layer(x)
        # The groups' rows as views from one split (not a slice each): a split's backward
        # joins the groups' gradients once, where each slice's would fill a zero tensor the
        # size of the whole pass and add into it.
        sizes = [end - start for _, start, end in groups]
        xs = x.split(sizes)
        base_outs = None
        parts = []
        for g, ((i, _, _), x_part) in enumerate(zip(groups, xs)):
            layer = self.layers[i]
            if layer is None or _plain_lora(layer):
                if base_outs is None:
                    base_outs = self.base(x).split(sizes)  # one GEMM for every row of the pass
                part = base_outs[g]
                if layer is not None:
                    part = (part + lora_product(layer, x_part)).to(part.dtype)
            else:  # DoRA or a trained copy: the task's own forward on its rows
                part = layer(x_part)
            parts.append(part)
        return torch.cat(parts)


class SharedEncoder:
    """The frozen base every task of a `train_many` run shares, and its routed linears."""

    def __init__(self, base: nn.Module, arch: str) -> None:
        for p in base.parameters():
            p.requires_grad_(False)
        self.model = base.train()  # dropout as in training (the tasks' dropout setting)
        self.arch = arch
        self.encoder = encoder.encoder_module(arch, base)
        self.prefix = next(n for n, m in base.named_children() if m is self.encoder)
        self.router = Router()
        self.routed: dict[str, RoutedLinear] = {}  # path in the encoder -> its routed linear
        self.members = 0

    def share(self, model: nn.Module) -> None:
        """Tie a freshly loaded task base's weights to this base's (its output layer stays its own)."""
        shared = dict(self.model.named_parameters())
        for path, routed in self.routed.items():  # a routed linear's weights are its base's
            for name, p in routed.base.named_parameters():
                shared[f"{self.prefix}.{path}.{name}"] = p
        for path, module in model.named_modules():
            if path.split(".")[0] in OUTPUT_LAYERS:
                continue
            for name, p in list(module._parameters.items()):
                src = shared.get(f"{path}.{name}" if path else name)
                if p is not None and src is not None and src.shape == p.shape:
                    module._parameters[name] = src

    def add(self, peft_model: nn.Module) -> int:
        """Route a task's adapted encoder layers through this base; returns its member index."""
        from peft.tuners.lora import LoraLayer
        from peft.utils import ModulesToSaveWrapper

        index = self.members
        self.members += 1
        for routed in self.routed.values():
            routed.layers.append(None)
        task_encoder = encoder.encoder_module(self.arch, peft_model.get_base_model())
        for path, module in task_encoder.named_modules():
            if not isinstance(module, (LoraLayer, ModulesToSaveWrapper)):
                continue
            routed = self.routed.get(path)
            if routed is None:
                base = self.encoder.get_submodule(path)
                if not isinstance(base, nn.Linear):
                    continue  # peft adapts only linears here; others run in the task's own model
                parent, _, child = path.rpartition(".")
                routed = RoutedLinear(base, self.router)
                routed.layers = [None] * self.members
                setattr(self.encoder.get_submodule(parent) if parent else self.encoder, child, routed)
                self.routed[path] = routed
            routed.layers[index] = module
        return index

    def remove(self, index: int) -> None:
        """A task left the mix: drop its layers (its rows are never routed again)."""
        for routed in self.routed.values():
            routed.layers[index] = None

    def set_dropout(self, p: float | None) -> None:
        if p is not None:
            for module in self.model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = p

    def __call__(self, input_ids: torch.Tensor, mask: torch.Tensor, sep: int | None,
                 groups: Sequence[tuple[int, int, int]]):
        """The encoder's output for a pass whose rows are grouped by task as `groups` say."""
        with self.router.route(groups):
            return self.encoder(**encoder.model_inputs(self.arch, input_ids, mask, sep))


@contextlib.contextmanager
def answered(module: nn.Module, output) -> Iterator[None]:
    """`module`'s forward returns `output` for the block, whatever its inputs."""
    module.forward = lambda *args, **kwargs: output
    try:
        yield
    finally:
        del module.forward


def task_outputs(arch: str, peft_model: nn.Module, encoded, start: int, end: int, width: int,
                 input_ids: torch.Tensor, mask: torch.Tensor, sep: int | None):
    """The task model's output for rows start..end of a shared pass, cut to `width` tokens (its
    own longest row, as a batch of its own rows would be padded): transformers' head code
    runs on the shared encoder's states for these rows."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    pooled = getattr(encoded, "pooler_output", None)
    own = BaseModelOutputWithPooling(
        last_hidden_state=encoded[0][start:end, :width],
        pooler_output=None if pooled is None else pooled[start:end])
    with answered(encoder.encoder_module(arch, peft_model.get_base_model()), own):
        return peft_model(**encoder.model_inputs(arch, input_ids[start:end, :width],
                                                 mask[start:end, :width], sep))
