"""General distillation of a made student's base on unlabelled text (TinyBERT/MiniLM style).

    general_distill("mini-3", "{shared}/sst2/train.tsv", GeneralDistillConfig(max_seconds=300))

The whole student base trains (not an adapter) to match its teacher on the same text: every
student hidden state (embeddings included) against the teacher's at the uniformly mapped depth
(student j of N <-> teacher round(j * L / N), so the last matches the last), by mean squared
error over real tokens, and every student layer's attention distributions against the mapped
teacher layer's, by KL divergence over real query tokens. Student and teacher share the width
and head count (a made student always does), so nothing is projected.

The student folder is rewritten atomically with the new weights and a record of the run; its
fingerprint changes, so adapters trained on it before are refused (they were for other
weights). A checkpoint beside the folder resumes an interrupted run; `max_seconds` bounds it.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..backbones import Backbone, encoder
from ..backbones.embedded import BASE_INFO
from ..devices import resolve_device
from ..errors import BackboneError, ConfigError
from ..files import atomic_directory, atomic_write_text
from ..tasks import TaskSpec
from ..tasks.reading import collate, length_grouped_batches
from .unlabelled import read_texts


@dataclass
class GeneralDistillConfig:
    """How to distil a student base on unlabelled text."""

    max_seconds: float | None = 600.0
    """Stop after this long (the weights so far are kept)."""
    max_steps: int | None = None
    """At most this many steps (default: one pass over the texts)."""
    max_texts: int | None = None
    text_column: str | None = None
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.06
    max_length: int = 128
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    resume: bool = True

    def check(self) -> None:
        bad = [f"{k}={v!r} must be positive" for k, v in
               (("batch_size", self.batch_size), ("learning_rate", self.learning_rate),
                ("max_length", self.max_length), ("max_seconds", self.max_seconds or 1),
                ("max_steps", self.max_steps or 1), ("max_texts", self.max_texts or 1))
               if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0]
        if bad:
            raise ConfigError("the general distillation config is invalid:\n  - " + "\n  - ".join(bad))


@dataclass
class GeneralDistillResult:
    student: str
    path: str
    texts: int
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    resumed_from: int

    def to_dict(self) -> dict:
        return asdict(self)


def _load(path: Path):
    from transformers import AutoModelForSequenceClassification

    # eager attention: the distributions are what is matched, and only eager returns them
    return AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1,
                                                              attn_implementation="eager")


def _layer_map(student_depth: int, teacher_depth: int) -> list[int]:
    return [round(j * teacher_depth / student_depth) for j in range(student_depth + 1)]


def distill_loss(s_out, t_out, mask: torch.Tensor, layer_map: list[int],
                 hidden_weight: float = 1.0, attention_weight: float = 1.0) -> torch.Tensor:
    """Hidden-state MSE and attention KL of a student forward pass against the teacher's."""
    real = mask.bool()  # [B, T]
    hidden = torch.stack([
        (s_out.hidden_states[j] - t_out.hidden_states[t]).pow(2).mean(-1)[real].mean()
        for j, t in enumerate(layer_map)]).mean()
    kls = []
    for j in range(len(layer_map) - 1):
        s_att = s_out.attentions[j]  # [B, heads, T, T]
        t_att = t_out.attentions[layer_map[j + 1] - 1]
        kl = (t_att * (t_att.clamp_min(1e-12).log() - s_att.clamp_min(1e-12).log())).sum(-1)
        kls.append(kl.mean(1)[real].mean())  # over heads, then real query tokens
    return hidden_weight * hidden + attention_weight * torch.stack(kls).mean()


def general_distill(student: str, texts: str | Path | list[str],
                    config: GeneralDistillConfig | None = None) -> GeneralDistillResult:
    """Distil made student `student`'s base towards its teacher on `texts` (a file, any text
    column, or a list of strings); rewrite its folder with the new weights."""
    cfg = config or GeneralDistillConfig()
    cfg.check()
    sb = Backbone.resolve(student)
    info = json.loads((sb.path / BASE_INFO).read_text())
    if "student" not in info:
        raise BackboneError(f"backbone {student!r} is not a made student (no teacher recorded); "
                            "make one with `adapters-kit backbones make NAME --from TEACHER ...`")
    tb = Backbone.resolve(info["student"]["teacher"])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if isinstance(texts, (list, tuple)):
        rows, source = [str(t) for t in texts][: cfg.max_texts], "a list of texts"
    else:
        reader = TaskSpec(name="unlabelled-text", labels=["a", "b"])
        rows, source = read_texts(texts, reader, cfg.text_column, cfg.max_texts)[0], str(texts)
    tokenizer = sb.tokenizer()
    ids = [x for x in tokenizer(rows, truncation=True, max_length=cfg.max_length)["input_ids"] if x]
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    s_model, t_model = _load(sb.path).to(device).train(), _load(tb.path).to(device).eval()
    s_enc, t_enc = encoder.encoder_module(sb.arch, s_model), encoder.encoder_module(tb.arch, t_model)
    for p in t_model.parameters():
        p.requires_grad_(False)
    params = [p for n, p in s_enc.named_parameters() if "pooler" not in n]
    depth = lambda m: getattr(m.config, "n_layers", None) or m.config.num_hidden_layers  # noqa: E731
    layer_map = _layer_map(depth(s_model), depth(t_model))
    batches = length_grouped_batches([len(x) for x in ids], cfg.batch_size, seed=cfg.seed)
    total = min(len(batches), cfg.max_steps or len(batches))
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.01)
    warmup = max(1, int(cfg.warmup_ratio * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))

    ckpt = sb.path.parent / f".general-{sb.path.name}"
    key = json.dumps({"cfg": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "resume",
                      "max_seconds", "threads", "device")}, "texts": source, "n": len(ids)}, sort_keys=True)
    start, losses = 0, []
    if cfg.resume and (ckpt / "progress.json").is_file():
        progress = json.loads((ckpt / "progress.json").read_text())
        if progress["key"] == key:
            s_model.load_state_dict(load_file(str(ckpt / "student.safetensors")), strict=False)
            start, losses = progress["step"], progress["losses"]
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
                (s + 1 + start) / warmup, max(0.0, (total - s - start) / max(1, total - warmup))))
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, disable=not cfg.progress, desc=f"distil {student}",
               unit="step", dynamic_ncols=True)
    began, step = time.perf_counter(), start
    sep = tokenizer.sep_token_id
    for batch in batches[start:total]:
        input_ids, mask = collate([ids[i] for i in batch], tokenizer.pad_token_id or 0, device)
        with torch.no_grad():
            t_out = t_enc(**encoder.model_inputs(tb.arch, input_ids, mask, sep),
                          output_hidden_states=True, output_attentions=True)
        s_out = s_enc(**encoder.model_inputs(sb.arch, input_ids, mask, sep),
                      output_hidden_states=True, output_attentions=True)
        loss = distill_loss(s_out, t_out, mask, layer_map, cfg.hidden_weight, cfg.attention_weight)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigError(f"general distillation diverged at step {step} (loss {value}); "
                              f"lower learning_rate {cfg.learning_rate}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(round(value, 5))
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        if step % 50 == 0 and step < total:  # resumable from here
            _checkpoint(ckpt, s_model, {"key": key, "step": step, "losses": losses})
        if cfg.max_seconds is not None and time.perf_counter() - began >= cfg.max_seconds:
            break
    bar.close()
    seconds = time.perf_counter() - began
    record = {"texts": source, "rows": len(ids), "steps": step, "of_steps": total,
              "seconds": round(seconds, 1), "first_loss": losses[0] if losses else None,
              "last_loss": losses[-1] if losses else None, "layer_map": layer_map,
              "config": {k: v for k, v in asdict(cfg).items() if k != "progress"}}
    _rewrite(sb.path, s_model, info, record)
    shutil.rmtree(ckpt, ignore_errors=True)
    return GeneralDistillResult(student=student, path=str(sb.path), texts=len(ids), steps=step,
                                seconds=round(seconds, 1), first_loss=losses[0] if losses else math.nan,
                                last_loss=losses[-1] if losses else math.nan, resumed_from=start)


def _base_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()
            if not k.startswith("classifier.")}


def _checkpoint(folder: Path, model: torch.nn.Module, progress: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_base_state(model), str(folder / "student.safetensors"))
    atomic_write_text(folder / "progress.json", json.dumps(progress))


def _rewrite(path: Path, model: torch.nn.Module, info: dict, record: dict) -> None:
    """The student folder again, with the distilled weights (its head folders, cut from the old
    weights, are left behind to be rebuilt)."""
    info["student"]["general_distillation"] = record
    with atomic_directory(path, overwrite=True) as tmp:
        save_file(_base_state(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for f in path.iterdir():
            if f.is_file() and f.name not in ("model.safetensors", BASE_INFO):
                shutil.copyfile(f, tmp / f.name)
        (tmp / BASE_INFO).write_text(json.dumps(info, indent=2))
