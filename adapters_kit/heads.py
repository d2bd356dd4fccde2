"""Task heads: how each task kind turns logits into a loss and into predictions.

The head's modules are the backbone's own (`pre_classifier` or the pooler, then
`classifier`), so plain peft rebuilds them; this module owns what the kinds mean.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PROBLEM_TYPE = {
    "classification": "single_label_classification",
    "multi-label": "multi_label_classification",
    "regression": "regression",
}


def loss(kind: str, logits: torch.Tensor, targets: torch.Tensor,
         weight: torch.Tensor | None = None) -> torch.Tensor:
    """The kind's loss; `weight` [n_labels] weighs classes (cross-entropy) or positives (BCE)."""
    if kind == "classification":
        return F.cross_entropy(logits, targets, weight=weight)
    if kind == "multi-label":
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight)
    return F.mse_loss(logits.reshape(-1), targets)


def class_weights(kind: str, labels: list[str], setting, targets: torch.Tensor) -> torch.Tensor | None:
    """Loss weights [n_labels] for a `TaskSpec.class_weights` setting, from the training targets
    ([n] label ids, or [n, n_labels] multi-hot); None when the setting is none."""
    if setting is None:
        return None
    n = len(labels)
    if isinstance(setting, dict):
        return torch.tensor([float(setting.get(name, 1.0)) for name in labels])
    if kind == "classification":
        from sklearn.utils.class_weight import compute_class_weight

        y = targets.numpy()
        present = np.unique(y)
        out = torch.ones(n)  # a class with no training rows never meets the loss
        out[torch.from_numpy(present)] = torch.from_numpy(
            compute_class_weight("balanced", classes=present, y=y)).float()
        return out
    positives = targets.sum(0)  # [n_labels]
    return torch.where(positives > 0, (len(targets) - positives) / positives.clamp(min=1),
                       torch.ones(n))


def model_inputs(arch: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 sep_id: int | None) -> dict[str, torch.Tensor]:
    """The keyword inputs the backbone takes, as its tokenizer would give them.

    ALBERT has token types: 0 up to and including the first [SEP], 1 after it (the second
    text of a pair, a QA context), 0 on padding. DistilBERT has none.
    """
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if arch == "albert" and sep_id is not None:
        is_sep = (input_ids == sep_id).long()
        out["token_type_ids"] = ((is_sep.cumsum(1) - is_sep) >= 1).long() * attention_mask
    return out


def encoder_hidden(arch: str, model: torch.nn.Module, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor, sep_id: int | None = None) -> torch.Tensor:
    """Every token's final hidden state [B, T, hidden], as the HF token and QA heads read it."""
    encoder = model.distilbert if arch == "distilbert" else model.albert
    return encoder(**model_inputs(arch, input_ids, attention_mask, sep_id))[0]


def encoder_cls(arch: str, model: torch.nn.Module, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, sep_id: int | None = None) -> torch.Tensor:
    """The first token's final hidden state [B, hidden], as the HF classification heads read it."""
    return encoder_hidden(arch, model, input_ids, attention_mask, sep_id)[:, 0]


def dense_activation(arch: str, x: torch.Tensor) -> torch.Tensor:
    """DistilBERT: ReLU after `pre_classifier`; ALBERT: tanh after the pooler (eval mode)."""
    return F.relu(x) if arch == "distilbert" else torch.tanh(x)


def dense_module(arch: str, model: torch.nn.Module) -> torch.nn.Module:
    from .backbones import HEAD_DENSE_PATH

    return model.get_submodule(HEAD_DENSE_PATH[arch])


def decode(kind: str, labels: list[str], logits: torch.Tensor, threshold: float = 0.5) -> list[dict]:
    """Predictions for one task's rows: [{"label", "scores"}], multi-label adds "labels"."""
    logits = logits.float()
    if kind == "regression":
        return [{"label": None, "value": float(v)} for v in logits.reshape(-1)]
    probs = logits.softmax(-1) if kind == "classification" else logits.sigmoid()
    out = []
    for row in probs:
        scores = {name: float(p) for name, p in zip(labels, row)}
        if kind == "classification":
            out.append({"label": labels[int(row.argmax())], "scores": scores})
        else:
            chosen = sorted((n for n, p in scores.items() if p >= threshold), key=lambda n: -scores[n])
            out.append({"label": chosen[0] if chosen else None, "labels": chosen, "scores": scores})
    return out
