"""The training recipe's parts, one at a time: the resolved config, the early-stopping tracker,
the checkpoint's state round trip, the trainable-weights check, the schedule."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from adapters_kit import AdaptersKitError, TaskSpec, TrainConfig
from adapters_kit.errors import ConfigError, TrainingError
from adapters_kit.training import ResolvedConfig, lora_config
from adapters_kit.training.checkpoint import Checkpoint
from adapters_kit.training.fit import EarlyStopping
from adapters_kit.training.setup import LoraSettings, Steps, optimizer_for, schedule_for, trainable

SPEC = TaskSpec(name="parts", labels=["neg", "pos"], train="unused.tsv", epochs=3,
                learning_rate=1e-3, batch_size=8, rank=4, max_length=64, class_weights="balanced")


# -- the resolved config ---------------------------------------------------------------------

def test_the_resolved_config_is_one_frozen_typed_object_with_the_cards_defaults():
    run = TrainConfig(rank=8, precision="fp32", max_length=32).resolved(SPEC)
    assert isinstance(run, ResolvedConfig)
    assert (run.rank, run.epochs, run.batch_size, run.learning_rate) == (8, 3, 8, 1e-3)
    assert run.precision == "fp32" and run.class_weights == "balanced"
    assert run.task.max_length == 32 and run.task.name == "parts"  # the task as trained
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.rank = 16
    assert "task" not in run.record() and "progress" not in run.record()
    assert list(run.record())[:3] == ["backbone", "epochs", "learning_rate"]
    assert TrainConfig(class_weights="none").resolved(SPEC).task.class_weights == "none"
    assert TrainConfig(precision="auto").resolved(SPEC).precision in ("fp32", "bf16")
    assert TrainConfig().resolved(SPEC).task is SPEC  # nothing overridden: the card itself


def test_the_resolved_config_refuses_bad_values_all_in_one_message():
    with pytest.raises(ConfigError) as e:
        TrainConfig(head="big", batch_size=0, precision="fp16", threads=0, warmup_ratio=1.5,
                    patience=0, epochs=-1, dropout=1.0).resolved(SPEC)
    message = str(e.value)
    for part in ("head 'big' must be 'lora' or 'full'", "batch_size must be an integer >= 1, got 0",
                 "precision 'fp16'", "threads 0 must be at least 1", "warmup_ratio must be in [0, 1)",
                 "patience must be an integer >= 1", "epochs must be a positive number, got -1",
                 "dropout must be in [0, 1), got 1.0"):
        assert part in message, message
    assert isinstance(e.value, AdaptersKitError) and isinstance(e.value, ValueError)
    with pytest.raises(ConfigError, match="rank must be an integer >= 1, got '8'"):
        TrainConfig(rank="8").resolved(SPEC)


def test_lora_config_reads_a_dict_or_the_resolved_config_alike():
    run = TrainConfig(rank=8, lora_alpha=16, lora_dropout=0.0, targets="qv").resolved(SPEC)
    as_dict = {"rank": 8, "lora_alpha": 16, "lora_dropout": 0.0, "targets": "qv", "head": "lora"}
    for cfg in (run, as_dict, LoraSettings(8, 16, 0.0, "qv")):
        lc = lora_config("distilbert", 2, cfg)
        assert (lc.r, lc.lora_alpha, lc.lora_dropout) == (8, 16, 0.0)
        assert set(lc.target_modules) == set(lora_config("distilbert", 2, run).target_modules)


# -- early stopping --------------------------------------------------------------------------

def test_early_stopping_tracks_the_best_and_stops_after_patience_evaluations_without_one():
    es = EarlyStopping(patience=2)
    assert [es.update(s, v) for s, v in [(1, 0.5), (2, 0.7), (3, 0.7), (4, 0.6)]] == \
        [True, True, False, False]  # a tie is not better
    assert (es.best, es.best_step, es.bad_evals, es.should_stop) == (0.7, 2, 2, True)
    again = EarlyStopping(patience=2)
    again.load_state_dict(json.loads(json.dumps(es.state_dict())))
    assert again.state_dict() == es.state_dict() and again.should_stop
    assert again.update(5, 0.8) and not again.should_stop and again.best_step == 5

    mse = EarlyStopping(patience=1, higher_is_better=False)  # lower is better
    assert mse.update(1, 2.0) and mse.update(2, 1.5) and not mse.update(3, 1.7)
    assert (mse.best, mse.best_step, mse.should_stop) == (1.5, 2, True)


# -- the checkpoint --------------------------------------------------------------------------

class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)  # a matrix (decays) and a vector (does not)


def _setup(seed: int):
    torch.manual_seed(seed)
    model = _Tiny()
    params = dict(model.named_parameters())
    run = TrainConfig(warmup_ratio=0.3, weight_decay=0.1).resolved(SPEC)
    optimizer = optimizer_for(params, run)
    schedule = schedule_for(optimizer, Steps(per_epoch=5, total=10, eval_every=5, warmup=3))
    return model, params, optimizer, schedule


def _steps(model, optimizer, schedule, n: int) -> None:
    for _ in range(n):
        model.lin(torch.randn(2, 4)).pow(2).sum().backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)


def _same_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]  # lr, betas (tuples again), weight decay ...
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for k, v in a["state"][i].items():
            assert torch.equal(v, b["state"][i][k]) and v.dtype == b["state"][i][k].dtype, (i, k)


def test_checkpoint_restores_the_optimizer_schedule_weights_and_rng_and_pickles_nothing(tmp_path):
    model, params, optimizer, schedule = _setup(0)
    _steps(model, optimizer, schedule, 4)
    best = {"lin.weight": params["lin.weight"].detach() * 2}
    ckpt = Checkpoint(tmp_path / "ckpt", key="k")
    ckpt.save(params, optimizer, schedule, {"step": 4, "note": [1, 2]}, best)
    assert sorted(p.name for p in ckpt.dir.iterdir()) == [
        "best.safetensors", "optimizer.json", "progress.json", "state.safetensors"]
    rng_then = torch.get_rng_state()

    other, other_params, other_opt, other_schedule = _setup(1)  # other weights, a fresh optimizer
    torch.manual_seed(123)
    assert ckpt.load(other_params, other_opt, other_schedule) == {"step": 4, "note": [1, 2]}
    _same_state(optimizer.state_dict(), other_opt.state_dict())
    assert other_schedule.state_dict() == schedule.state_dict()
    assert all(torch.equal(params[n], other_params[n]) for n in params)
    assert torch.equal(torch.get_rng_state(), rng_then)
    assert torch.equal(ckpt.best()["lin.weight"], best["lin.weight"])
    # and training goes on exactly as it would have
    _steps(model, optimizer, schedule, 3)
    torch.set_rng_state(rng_then)
    _steps(other, other_opt, other_schedule, 3)
    assert all(torch.equal(params[n], other_params[n]) for n in params)
    assert other_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_a_checkpoint_of_another_run_is_ignored_and_changes_nothing(tmp_path):
    model, params, optimizer, schedule = _setup(0)
    _steps(model, optimizer, schedule, 2)
    Checkpoint(tmp_path / "ckpt", key="a").save(params, optimizer, schedule, {"step": 2}, None)
    _, fresh_params, fresh_opt, fresh_schedule = _setup(1)
    before = {n: p.detach().clone() for n, p in fresh_params.items()}
    assert Checkpoint(tmp_path / "ckpt", key="b").load(fresh_params, fresh_opt, fresh_schedule) is None
    assert all(torch.equal(before[n], fresh_params[n]) for n in before)
    assert fresh_opt.state_dict()["state"] == {} and Checkpoint(tmp_path / "none", "a").best() is None


# -- what trains -----------------------------------------------------------------------------

CHECK = """
import torch
from adapters_kit.errors import TrainingError
from adapters_kit.training.setup import trainable
m = torch.nn.Module()
m.base = torch.nn.Linear(2, 2)  # a base weight left trainable
try:
    trainable(m)
except TrainingError as e:
    print("refused:", e)
"""


def test_training_base_weights_is_refused_with_a_real_error_even_under_python_O():
    model = torch.nn.Module()
    model.encoder = torch.nn.Linear(2, 2)
    model.lora = torch.nn.ModuleDict({"x": torch.nn.Linear(2, 2)})
    model.lora.requires_grad_(False)
    with pytest.raises(TrainingError, match=r"2 base weights would be trained \(encoder.weight, "
                                            r"encoder.bias\).*bias='none'"):
        trainable(model)
    model.encoder.requires_grad_(False)
    assert trainable(model) == {}
    out = subprocess.run([sys.executable, "-O", "-c", CHECK], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "refused: 2 base weights would be trained" in out.stdout, out.stderr


# -- the schedule ----------------------------------------------------------------------------

def _old_schedule(s: int, warmup: int, total: int) -> float:
    """The hand-written LambdaLR factor this package used before transformers' schedule."""
    return min((s + 1) / max(1, warmup), max(0.0, (total - s) / max(1, total - warmup)))


@pytest.mark.parametrize("total,warmup", [(36, 2), (10, 0), (100, 6), (1, 0), (12, 3)])
def test_the_schedule_step_by_step_and_against_transformers_linear(total, warmup):
    """Ours: warmup reaches the full rate at step warmup - 1, then linear decay. transformers'
    `linear` warms up from 0: during warmup its rate at step s is ours at s - 1; from the end
    of warmup on, and with no warmup, the rates are the same step for step."""
    from transformers import get_scheduler

    def rates(make) -> list[float]:
        p = torch.nn.Parameter(torch.zeros(2))
        optimizer = torch.optim.AdamW([{"params": [p]}, {"params": [], "weight_decay": 0.0}], lr=0.5)
        schedule = make(optimizer)
        out = []
        for _ in range(total):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return out

    ours = rates(lambda o: schedule_for(o, Steps(per_epoch=total, total=total, eval_every=1,
                                                 warmup=warmup)))
    assert ours == [0.5 * _old_schedule(s, warmup, total) for s in range(total)]  # unchanged
    hf = rates(lambda o: get_scheduler("linear", o, num_warmup_steps=warmup, num_training_steps=total))
    assert hf[warmup:] == ours[warmup:]
    assert hf[:warmup] == [0.0, *ours[: warmup - 1]][:warmup]


def test_steps_plan_matches_the_data():
    run = TrainConfig(epochs=2.5, batch_size=16, evals_per_epoch=3, warmup_ratio=0.1).resolved(SPEC)
    assert Steps.plan(run, 100) == Steps(per_epoch=7, total=18, eval_every=2, warmup=1)


def test_an_error_subclass_is_picklable_with_its_fields():
    import pickle

    from adapters_kit.training import TrainingInterrupted

    e = pickle.loads(pickle.dumps(TrainingInterrupted("stopped", step=3, total_steps=9, checkpoint=None)))
    assert (str(e), e.step, e.total_steps, e.checkpoint) == ("stopped", 3, 9, None)
    assert issubclass(TrainingError, AdaptersKitError)
