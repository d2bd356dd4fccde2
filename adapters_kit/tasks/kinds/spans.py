"""Extractive question answering: a start and an end score per word piece of the context.

Data: SQuAD v1.1 JSON (data -> paragraphs -> qas), or JSONL rows with `question`, `context`,
`answers` (SQuAD's {"text": [...], "answer_start": [...]} or a list of {"text", "answer_start"})
and an optional `title`. An example whose answer is not in its context is named and skipped,
with a count (a `DataWarning`).

Long contexts are cut into windows of `max_length` word pieces that overlap by `doc_stride`.
A window that does not hold the answer is trained to point at [CLS]. Decoding takes the best
valid span (inside the context, end >= start, at most `max_answer_length` pieces) across all
windows of a question; its score is the window's start x end probability.

Without a dev file the held-out split is by article: titles sorted, shuffled with seed 0, the
last `dev_articles` held out, so no paragraph is in both and the split never changes.
"""

from __future__ import annotations

import json
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ...backbones import SPAN_OUT
from ...errors import DataError, DataWarning
from ..reading import data_file, read_table
from . import Features, Row, WholeHeadKind, require_train, seeded_order, shown
from .squad_eval import squad_scores

SPLIT_SEED = 0  # the article split is a property of the task, not of a training run


@dataclass
class QASplit:
    ids: list[str]
    titles: list[str]
    questions: list[str]
    contexts: list[str]
    answers: list[list[tuple[str, int]]]
    """Gold answers per question: (text, character start), the first one trained on."""
    source: str
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, idx: list[int]) -> QASplit:
        return QASplit(*([getattr(self, f)[i] for i in idx] for f in
                         ("ids", "titles", "questions", "contexts", "answers")),
                       source=self.source, skipped=list(self.skipped))

    def articles(self) -> list[str]:
        return sorted(set(self.titles))


def _records_from_squad(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not SQuAD v1.1 JSON ({e}); expected "
                        "{\"data\": [{\"title\", \"paragraphs\": [{\"context\", \"qas\"}]}]}") from e
    out = []
    for article in data:
        for para in article.get("paragraphs", []):
            for qa in para.get("qas", []):
                out.append({"id": str(qa.get("id", len(out))), "title": article.get("title", ""),
                            "question": qa.get("question", ""), "context": para.get("context", ""),
                            "answers": [(a.get("text", ""), a.get("answer_start", -1))
                                        for a in qa.get("answers", [])]})
    return out


def _records_from_table(spec, location: str) -> list[dict]:
    ds = read_table(spec, location)
    q_col, c_col = spec.text_fields
    missing = [c for c in (q_col, c_col, spec.label_field) if c not in ds.column_names]
    if missing:
        raise DataError(f"{location} has no column {missing} (task {spec.name!r} needs "
                        f"{[q_col, c_col, spec.label_field]}); it has {ds.column_names}")
    out = []
    for i, row in enumerate(ds):
        raw = row[spec.label_field]
        if isinstance(raw, dict):
            answers = list(zip(raw.get("text", []), raw.get("answer_start", [])))
        else:
            answers = [(a.get("text", ""), a.get("answer_start", -1)) for a in raw or []]
        out.append({"id": str(row.get("id", i + 1)), "title": row.get("title") or row[c_col],
                    "question": row[q_col], "context": row[c_col], "answers": answers})
    return out


def read_qa_split(spec, location: str) -> QASplit:
    """Read and check a SQuAD-style file; examples with no usable answer are skipped."""
    fmt = spec.format or ("squad" if Path(location).suffix.lower() == ".json" else "jsonl")
    if fmt == "squad":
        path = data_file(spec, location)
        records = _records_from_squad(path)
    elif fmt in ("jsonl", "parquet", "hub"):
        records = _records_from_table(spec, location)
    else:
        raise DataError(f"extractive-qa reads format \"squad\" or \"jsonl\", not {fmt!r}; fix "
                        "format in the task card")
    split = QASplit([], [], [], [], [], location)
    for r in records:
        if not str(r["question"] or "").strip() or not str(r["context"] or "").strip():
            split.skipped.append(f"{r['id']} (empty question or context)")
            continue
        good = []
        for text, start in r["answers"]:
            ctx = r["context"]
            if not text or not isinstance(start, int):
                continue
            if ctx[start : start + len(text)] != text:
                start = ctx.find(text)  # a shifted offset: the text itself is what counts
            if start >= 0:
                good.append((text, start))
        if not good:
            split.skipped.append(f"{r['id']} (answer {r['answers'][0][0] if r['answers'] else ''!r}"
                                 " not in its context)")
            continue
        split.ids.append(r["id"]), split.titles.append(str(r["title"]))
        split.questions.append(r["question"]), split.contexts.append(r["context"])
        split.answers.append(good)
    if split.skipped:
        names = "; ".join(split.skipped[:5]) + (" ..." if len(split.skipped) > 5 else "")
        warnings.warn(f"{location}: skipped {len(split.skipped)} of {len(records)} questions: "
                      f"{names}", DataWarning, stacklevel=2)
    if not len(split):
        raise DataError(f"{location} has no usable questions ({len(records)} read, "
                        f"{len(split.skipped)} skipped)")
    return split


def best_span(outputs: list[torch.Tensor], metas: list[dict], max_answer_length: int):
    """(score logit, window, start char, end char, probability) of the best span, or None."""
    best = None
    for w, (out, meta) in enumerate(zip(outputs, metas)):
        offsets = meta["offsets"]
        n = min(len(offsets), out.shape[0])
        start, end = out[:n, 0].float(), out[:n, 1].float()
        ctx = torch.tensor([o is not None for o in offsets[:n]])
        i = torch.arange(n)
        valid = ctx[:, None] & ctx[None, :] & (i[None, :] >= i[:, None]) & \
            (i[None, :] - i[:, None] < max_answer_length)
        if not valid.any():
            continue
        scores = (start[:, None] + end[None, :]).masked_fill(~valid, float("-inf"))
        flat = int(scores.reshape(-1).argmax())
        s, e = divmod(flat, n)
        logit = float(scores[s, e])
        if best is None or logit > best[0]:
            prob = float((start.log_softmax(0)[s] + end.log_softmax(0)[e]).exp())
            best = (logit, w, offsets[s][0], offsets[e][1], prob)
    return best


class SpanKind(WholeHeadKind):
    name = "extractive-qa"
    head = SPAN_OUT
    auto_class = "AutoModelForQuestionAnswering"
    peft_task_type = "QUESTION_ANS"
    metrics = ("f1", "exact_match")
    text_fields = ("question", "context")
    label_field = "answers"
    max_length = 384  # contexts are long: the usual SQuAD window
    labelled = False
    input_form = '{"question": ..., "context": ...} or [question, context]'

    def num_outputs(self, spec):
        return 2

    def output_names(self, spec):
        return ["start", "end"]

    def check(self, spec):
        out = []
        if len(spec.text_fields) != 2:
            out.append(f"extractive-qa needs text_fields [question, context], got {spec.text_fields!r}")
        if not 0 < spec.doc_stride < spec.max_length // 2:
            out.append(f"doc_stride {spec.doc_stride} must be positive and under half of "
                       f"max_length {spec.max_length}")
        if spec.max_answer_length < 1 or spec.dev_articles < 1:
            out.append("max_answer_length and dev_articles must be at least 1")
        return out

    def coerce(self, spec, item):
        if isinstance(item, dict):
            return item
        if isinstance(item, (list, tuple)) and len(item) == 2:
            return tuple(item)
        raise DataError(f"this task (extractive-qa) takes {self.input_form} per input")

    def read(self, spec, location):
        return read_qa_split(spec, location)

    def splits(self, spec, seed=0, max_train=None):
        data = read_qa_split(spec, require_train(spec))
        if spec.dev:
            train, dev = data, read_qa_split(spec, spec.dev)
        else:
            titles = data.articles()
            if len(titles) <= spec.dev_articles:
                raise DataError(f"{spec.train} has {len(titles)} articles: too few to hold out "
                                f"dev_articles = {spec.dev_articles}; lower it or give a dev file")
            random.Random(SPLIT_SEED).shuffle(titles)
            held = set(titles[-spec.dev_articles :])
            train = data.select([i for i, t in enumerate(data.titles) if t not in held])
            dev = data.select([i for i, t in enumerate(data.titles) if t in held])
        if max_train is not None and len(train) > max_train:
            train = train.select(sorted(seeded_order(len(train), seed)[:max_train]))
        return train, dev

    def _windows(self, spec, tokenizer, questions: list[str], contexts: list[str]):
        enc = tokenizer(questions, contexts, truncation="only_second", max_length=spec.max_length,
                        stride=spec.doc_stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True)
        rows = []
        for i, ids in enumerate(enc["input_ids"]):
            seq = enc.sequence_ids(i)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq)]
            rows.append((ids, offsets, enc["overflow_to_sample_mapping"][i]))
        return rows

    def featurize(self, spec, tokenizer, split, training=False):
        long_q = [i for i, q in enumerate(split.questions)
                  if len(tokenizer(q)["input_ids"]) > spec.max_length // 2]
        if long_q:
            raise DataError(f"{split.source}: questions {[split.ids[i] for i in long_q[:5]]} are "
                            f"longer than half of max_length {spec.max_length}; shorten them or "
                            "raise max_length")
        feats = Features(ids=[], targets=[], example=[], meta=[])
        for ids, offsets, ex in self._windows(spec, tokenizer, split.questions, split.contexts):
            text, start_char = split.answers[ex][0]
            end_char = start_char + len(text)
            ctx = [k for k, o in enumerate(offsets) if o is not None]
            target = (0, 0)  # [CLS]: the answer is not in this window
            if ctx and offsets[ctx[0]][0] <= start_char and offsets[ctx[-1]][1] >= end_char:
                s = next(k for k in ctx if offsets[k][1] > start_char)
                e = next(k for k in reversed(ctx) if offsets[k][0] < end_char)
                target = (s, e)
            feats.ids.append(ids), feats.targets.append(target)
            feats.example.append(ex), feats.meta.append({"offsets": offsets})
        return feats

    def batch_targets(self, feats, rows, width):
        return torch.tensor([feats.targets[r] for r in rows], dtype=torch.long)

    def outputs(self, model_output):
        return torch.stack([model_output.start_logits, model_output.end_logits], dim=-1)

    def loss(self, outputs, targets, weight=None):  # the card refuses class weights here
        return (F.cross_entropy(outputs[..., 0], targets[:, 0]) +
                F.cross_entropy(outputs[..., 1], targets[:, 1])) / 2

    def distill_loss(self, outputs, teacher, temperature, mask=None):
        """The KL divergence of the teacher's start distribution over the window's positions
        from the student's, and of its end distribution, averaged; padding masked out."""
        t = float(temperature)
        keep = torch.ones(outputs.shape[:2], dtype=torch.bool, device=outputs.device) if mask is None \
            else mask.bool()
        total = outputs.new_zeros((), dtype=torch.float32)
        for k in (0, 1):  # start, end: [B, T] each, a distribution over positions
            s = outputs[..., k].float().masked_fill(~keep, -1e4) / t
            q = teacher[..., k].float().masked_fill(~keep, -1e4) / t
            log_p, log_q = F.log_softmax(s, -1), F.log_softmax(q, -1)
            total = total + (log_q.exp() * (log_q - log_p)).sum(-1).mean()
        return total / 2 * t * t

    def evaluate(self, spec, split, feats, outputs):
        by_example: dict[int, list[int]] = {}
        for row, ex in enumerate(feats.example):
            by_example.setdefault(ex, []).append(row)
        predictions = []
        for ex in range(len(split)):
            rows = by_example.get(ex, [])
            best = best_span([outputs[r] for r in rows], [feats.meta[r] for r in rows],
                             spec.max_answer_length)
            predictions.append("" if best is None else split.contexts[ex][best[2] : best[3]])
        scores = squad_scores(predictions, [[t for t, _ in a] for a in split.answers])
        return {"f1": scores["f1"], "exact_match": scores["exact_match"]}

    def encode(self, spec, tokenizer, item):
        if isinstance(item, dict):
            item = (item.get("question"), item.get("context"))
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and
                all(isinstance(x, str) for x in item)):
            raise DataError(f"this task takes (question, context) per input, got {shown(item)}")
        question, context = item
        for what, value in (("question", question), ("context", context)):
            if not value.strip():
                raise DataError(f"got an empty {what}; a question needs both "
                                "a question and a context to find its answer in")
        if len(tokenizer(question)["input_ids"]) > spec.max_length // 2:
            raise DataError(f"the question is longer than half of max_length {spec.max_length} "
                            "word pieces; shorten it")
        rows = [Row(ids, {"offsets": offsets, "context": context})
                for ids, offsets, _ in self._windows(spec, tokenizer, [question], [context])]
        if not any(o is not None for r in rows for o in r.meta["offsets"]):
            # e.g. only control characters, which the tokenizer drops: no span could be answered
            raise DataError(f"the context has no readable text ({shown(context)}); send the "
                            "text to find the answer in")
        return rows

    def decode(self, spec, rows, outputs, item):
        best = best_span(outputs, [r.meta for r in rows], spec.max_answer_length)
        context = rows[0].meta["context"]
        _, window, start, end, prob = best
        return {"answer": context[start:end], "start": start, "end": end, "score": prob,
                "windows": len(rows)}
