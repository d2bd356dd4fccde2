"""The sequence kinds' shared part: one output per input, read from the first token.

The head is the backbone's own (DistilBERT's `pre_classifier`, ALBERT's pooler, then
`classifier`). `ClassificationKind`, `MultiLabelKind` and `RegressionKind` (one file each) say
what the outputs mean: targets, loss, decoding, metrics and the TF-IDF baseline's model.
"""

from __future__ import annotations

import torch

from ...errors import DataError
from ..reading import load_eval_split, load_splits, tokenize
from . import Features, Kind, Row, lora_variants, shown


class SequenceKind(Kind):
    """A text (or a pair of texts) in, one vector of outputs out."""

    def describe_input(self, spec) -> str:
        return "[text_a, text_b]" if spec.is_pair else "a text"

    # -- the model --------------------------------------------------------------------------

    def lora_config(self, arch, num_outputs, cfg):
        from peft import LoraConfig, TaskType

        from ...backbones import HEAD_DENSE, target_modules

        common = {"r": cfg.rank, "lora_alpha": cfg.lora_alpha,
                  "lora_dropout": cfg.lora_dropout, **lora_variants(cfg),
                  "target_modules": target_modules(arch, cfg.targets, cfg.head, pooled=True)}
        if cfg.head == "lora":
            if common["use_dora"]:
                from ...errors import TrainingError

                raise TrainingError(
                    "use_dora needs head='full' for this task kind: the 'lora' head's classifier "
                    "is a LoRA over a zero base layer, which DoRA cannot normalise (its weight "
                    "norm is 0, and training gives NaN); pass head='full' (--head full)")
            # No task type: peft's SEQ_CLS would add "classifier" to modules_to_save, and its
            # suffix match also catches DistilBERT's pre_classifier, saving a dim x dim matrix per
            # adapter. The classifier is a LoRA over a zero base instead; its rank must reach the
            # label count.
            rank_pattern = {self.head: num_outputs} if num_outputs > cfg.rank else {}
            return LoraConfig(**common, rank_pattern=rank_pattern,
                              alpha_pattern={self.head: 2 * num_outputs} if rank_pattern else {})
        extra = [HEAD_DENSE[arch]] if arch == "albert" else []  # DistilBERT's: caught by "classifier"
        return LoraConfig(**common, task_type=TaskType.SEQ_CLS, modules_to_save=[self.head, *extra])

    def base_fingerprint(self, backbone, model) -> str:
        from ...backbones import fingerprint

        return fingerprint(model)  # the base with its zero output layer (Backbone.head_dir)

    # -- data -------------------------------------------------------------------------------

    def parse_targets(self, spec, raw: list, rows: list[int]) -> tuple[torch.Tensor, dict]:
        """Model targets for a label column, and the bad values -> their file rows."""
        raise NotImplementedError

    def expected_labels(self, spec) -> str:
        """What a label cell may hold, in words (for the message naming bad cells)."""
        return f"one of {spec.labels}" + (f" or raw values {sorted(spec.label_map)}"
                                          if spec.label_map else "")

    def splits(self, spec, seed=0, max_train=None):
        return load_splits(spec, seed=seed, max_train=max_train)

    def read(self, spec, location):
        return load_eval_split(spec, location)

    def eval_split(self, spec, location=None, split="dev", seed=0):
        return load_eval_split(spec, location, split, seed)

    def featurize(self, spec, tokenizer, split, training=False):
        ids = tokenize(tokenizer, split, spec.max_length)
        return Features(ids=ids, targets=split.targets, example=list(range(len(ids))))

    def batch_targets(self, feats, rows, width):
        return feats.targets[rows]

    distils_unlabelled = True

    def unlabelled(self, spec, columns, source):
        from ..reading import Split

        n = len(columns[0])
        return Split(texts=columns, targets=torch.zeros(n), source=source, rows=list(range(1, n + 1)))

    # -- scores -----------------------------------------------------------------------------

    def score(self, targets: torch.Tensor, outputs: torch.Tensor) -> dict[str, float]:
        """Metrics for raw outputs [n, n_outputs] against targets."""
        raise NotImplementedError

    def evaluate(self, spec, split, feats, outputs):
        return self.score(split.targets, torch.stack(outputs))

    def baseline_outputs(self, spec, x_train, y, x_dev, dev_targets) -> torch.Tensor | None:
        """The TF-IDF baseline's outputs on dev, in this kind's output form (None: no baseline)."""
        raise NotImplementedError

    def baseline(self, spec, train, dev):
        """TF-IDF (word 1-2 grams) + a linear model of this kind, on the same split."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        x_train = vec.fit_transform(train.joined())
        out = self.baseline_outputs(spec, x_train, train.targets.numpy(),
                                    vec.transform(dev.joined()), dev.targets)
        return {} if out is None else self.score(dev.targets, out.float())

    # -- serving ----------------------------------------------------------------------------

    def coerce(self, spec, item):
        if isinstance(item, dict):
            raise DataError(f"this task ({self.name}) does not take an object input; send "
                            f"{self.describe_input(spec)}")
        if spec.is_pair:
            if isinstance(item, (list, tuple)) and len(item) == 2:
                return tuple(item)
            raise DataError("this task takes a pair of texts per input: send [text_a, text_b]")
        if not isinstance(item, str):
            raise DataError("this task takes one text per input: send a string")
        return item

    def encode(self, spec, tokenizer, item):
        parts = [item] if isinstance(item, str) else list(item)
        if len(parts) != (2 if spec.is_pair else 1) or not all(isinstance(p, str) for p in parts):
            want = "a pair of texts" if spec.is_pair else "one text"
            raise DataError(f"this task takes {want} per input, got {shown(item)}")
        if not all(p.strip() for p in parts):
            raise DataError("got an empty text; send the text to classify")
        return [Row(tokenizer(*parts, truncation=True, max_length=spec.max_length)["input_ids"])]

    def decode_logits(self, labels: list[str], logits: torch.Tensor) -> list[dict]:
        """Predictions for one task's rows [n, n_outputs]."""
        raise NotImplementedError

    def decode(self, spec, rows, outputs, item):
        return self.decode_logits(spec.labels, outputs[0].unsqueeze(0))[0]


def label_index(spec, raw_value) -> tuple[str, str | None]:
    """(the cell as read, the label name it maps to through label_map)."""
    key = str(raw_value).strip()
    return key, spec.label_map.get(key, key)
