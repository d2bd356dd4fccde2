"""The few collective steps `train` needs when `accelerate launch` starts several processes.

Under a launch of N > 1 processes (WORLD_SIZE > 1; on CPU `accelerate launch --multi_gpu
--num_processes N`, see the README) training runs as DDP through `accelerate`: on the GPUs
(NCCL, one per process) when the run's device is CUDA, else on the CPU (gloo):
each process takes its share of every global batch, gradients are averaged by DDP, losses and
dev outputs are reduced or gathered so that every process sees the figures a single process
would, and only the main process writes files. Outside a launch every method is the identity,
so a single process runs exactly the plain loop.
"""

from __future__ import annotations

import contextlib
import os

import torch


class Processes:
    """This process alone, or its place in a DDP group started by `accelerate launch`."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.accelerator = None
        self.rank, self.size = 0, 1
        self.device = device or torch.device("cpu")
        """Where this process trains: under a launch on GPUs, its own (`cuda:LOCAL_RANK`)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            try:
                from accelerate import Accelerator
            except ImportError as e:
                raise ImportError(f"WORLD_SIZE={world}: training in several processes needs "
                                  "accelerate; pip install accelerate (or run one process)") from e
            # CUDA: NCCL, each process on the GPU accelerate gives it; else gloo on the CPU
            self.accelerator = Accelerator(cpu=self.device.type != "cuda")
            self.rank, self.size = self.accelerator.process_index, self.accelerator.num_processes
            if self.device.type == "cuda":
                self.device = self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def main_first(self):
        """A context in which the main process goes first (filling caches), then the others."""
        return self.accelerator.main_process_first() if self.accelerator else contextlib.nullcontext()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to run training steps through: DDP over the group, or `model` itself."""
        return self.accelerator.prepare_model(model) if self.accelerator else model

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def share(self, batch: list[int]) -> tuple[list[int], float]:
        """This process's rows of a global batch, and the weight of its mean loss.

        DDP averages gradients over processes, so weighting each process's mean loss by its
        share of the rows gives the gradient of the global batch's mean loss, even when the
        batch does not split evenly. A process left without rows runs one at weight 0: DDP
        needs every process in every step.
        """
        if self.size == 1:
            return batch, 1.0
        mine = batch[self.rank :: self.size]
        if not mine:
            return batch[:1], 0.0
        return mine, len(mine) * self.size / len(batch)

    def mean(self, value: torch.Tensor) -> float:
        """The mean of a scalar over the processes (the global batch's loss from weighted ones)."""
        if self.accelerator is None:
            return float(value.detach())
        return float(self.accelerator.reduce(value.detach().float().reshape(1), "mean"))

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on one (decisions must agree, or DDP hangs)."""
        if self.accelerator is None:
            return flag
        return bool(self.accelerator.reduce(torch.tensor([float(flag)], device=self.device),
                                            "max") > 0)

    def map_rows(self, fn, rows: list[list[int]]) -> list:
        """`fn(rows)` (one output per row, in order) with the rows shared out: every process
        runs a length-balanced part and gets every output back."""
        if self.accelerator is None:
            return fn(rows)
        from accelerate.utils import gather_object

        mine = sorted(range(len(rows)), key=lambda i: len(rows[i]))[self.rank :: self.size]
        out: list = [None] * len(rows)
        for i, value in gather_object(list(zip(mine, fn([rows[i] for i in mine])))):
            out[i] = value
        return out

    def from_main(self, value):
        """The main process's `value`, on every process."""
        if self.accelerator is None:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value if self.is_main else None])[0]

    def wait(self) -> None:
        if self.accelerator:
            self.accelerator.wait_for_everyone()


def is_main_process() -> bool:
    """False in the non-main processes of an `accelerate launch` (they should not print)."""
    return int(os.environ.get("RANK", "0")) == 0
