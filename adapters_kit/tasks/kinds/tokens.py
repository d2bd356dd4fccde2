"""Token classification (NER): BIO tags per word, entity-level precision, recall and F1.

Data: CoNLL-style files (one token per line, its tag in the last column, a blank line between
sentences, `-DOCSTART-` lines skipped) or JSONL with `tokens` and `tags` lists. Tags are
checked against the task's labels and for broken BIO sequences, with line numbers.

Word pieces: a word's first piece carries its tag; the other pieces are ignored by the loss
(-100) and by decoding. Scoring is entity-level, exact span and type, as `seqeval` computes
it in its default (conlleval) mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import DataError
from ..reading import check_encoding, data_file, read_table, row_list
from . import Features, Row, WholeHeadKind, require_train, seeded_order, shown

IGNORE = -100


_BIO = re.compile(r"^(O|[BI]-\S+)$")


@dataclass
class TokenSplit:
    tokens: list[list[str]]
    tags: list[list[str]]
    lines: list[list[int]]
    """The file line (CoNLL) or JSONL row of every token, for error messages."""
    source: str
    unit: str = "line"

    def __len__(self) -> int:
        return len(self.tokens)

    def select(self, idx: list[int]) -> TokenSplit:
        return TokenSplit([self.tokens[i] for i in idx], [self.tags[i] for i in idx],
                          [self.lines[i] for i in idx], self.source, self.unit)


def _format(spec, path: str) -> str:
    if spec.format in ("conll", "jsonl", "hub"):
        return spec.format
    if spec.format is not None:
        raise DataError(f"token-classification reads format \"conll\" or \"jsonl\", not "
                        f"{spec.format!r}; fix format in the task card")
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    return "conll"


def read_conll(path: Path, encoding: str = "utf-8") -> TokenSplit:
    """Sentences of a CoNLL-style file: the first column is the token, the last the tag."""
    check_encoding(path, encoding)
    tokens, tags, lines = [], [], []
    cur_t, cur_g, cur_l = [], [], []
    with open(path, encoding=encoding) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if cur_t:
                    tokens.append(cur_t), tags.append(cur_g), lines.append(cur_l)
                    cur_t, cur_g, cur_l = [], [], []
                continue
            if len(parts) < 2:
                raise DataError(f"{path} line {lineno}: {line.strip()!r} has a token but no tag; "
                                "each line must be 'TOKEN ... TAG' (a blank line ends a sentence)")
            cur_t.append(parts[0]), cur_g.append(parts[-1]), cur_l.append(lineno)
    if cur_t:
        tokens.append(cur_t), tags.append(cur_g), lines.append(cur_l)
    if not tokens:
        raise DataError(f"{path} has no sentences; a task needs labelled examples")
    return TokenSplit(tokens, tags, lines, str(path))


def read_token_split(spec, location: str) -> TokenSplit:
    fmt = _format(spec, location)
    if fmt == "conll":
        path = data_file(spec, location)
        split = read_conll(path, spec.encoding)
    else:
        ds = read_table(spec, location)
        missing = [c for c in (spec.text_fields[0], spec.label_field) if c not in ds.column_names]
        if missing:
            raise DataError(f"{location} has no column {missing} (task {spec.name!r} needs "
                            f"{[spec.text_fields[0], spec.label_field]}); it has {ds.column_names}")
        toks, tags = ds[spec.text_fields[0]], ds[spec.label_field]
        for i, (t, g) in enumerate(zip(toks, tags)):
            if not isinstance(t, list) or not isinstance(g, list) or len(t) != len(g) or not t:
                raise DataError(f"{location} row {i + 1}: tokens and tags must be non-empty lists "
                                f"of the same length (got {len(t or [])} tokens, "
                                f"{len(g or []) if isinstance(g, list) else g!r} tags)")
        split = TokenSplit([[str(x) for x in t] for t in toks], [[str(x) for x in g] for g in tags],
                           [[i + 1] * len(t) for i, t in enumerate(toks)], location, "row")
    check_tags(spec, split)
    return split


def check_tags(spec, split: TokenSplit) -> None:
    """Refuse unknown tags and broken BIO sequences (I-X not after B-X or I-X), naming lines."""
    known = set(spec.labels)
    unknown: dict[str, list[int]] = {}
    broken: list[str] = []
    unit = split.unit
    for toks, tags, lines in zip(split.tokens, split.tags, split.lines):
        prev = "O"
        for tok, tag, line in zip(toks, tags, lines):
            if tag not in known:
                unknown.setdefault(tag, []).append(line)
            elif tag.startswith("I-") and prev[2:] != tag[2:]:
                broken.append(f"{unit} {line}: {tag} after {prev} ({tok!r})")
            prev = tag
    problems = []
    if unknown:
        parts = [f"{t!r} ({row_list(ls, unit=unit)})" for t, ls in list(unknown.items())[:10]]
        problems.append(f"unknown tags {'; '.join(parts)}; the task's labels are {spec.labels}. "
                        "Add them to the card's labels or fix the data")
    if broken:
        more = f" (and {len(broken) - 5} more)" if len(broken) > 5 else ""
        problems.append("broken BIO sequences, an I- tag must follow B- or I- of its type: "
                        + "; ".join(broken[:5]) + more + ". Fix the tags, or convert IOB1 data "
                        "to IOB2 (each entity starts with B-)")
    if problems:
        raise DataError(f"{split.source}: " + "\n  ".join(problems))


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word) spans of a BIO sequence, conlleval style: an I- tag that
    does not continue an entity of its type starts one."""
    out: list[tuple[str, int, int]] = []
    current = None
    for i, tag in enumerate(tags + ["O"]):
        kind = tag[2:] if tag != "O" else None
        continues = tag.startswith("I-") and current is not None and current[0] == kind
        if current is not None and not continues:
            out.append((current[0], current[1], i - 1))
            current = None
        if kind is not None and not continues:
            current = (kind, i)
    return out


class TokenKind(WholeHeadKind):
    name = "token-classification"
    auto_class = "AutoModelForTokenClassification"
    peft_task_type = "TOKEN_CLS"
    metrics = ("f1", "precision", "recall")
    text_fields = ("tokens",)
    label_field = "tags"
    input_form = "a text, or a list of words"

    def check(self, spec):
        out = []
        bad = [x for x in spec.labels if not _BIO.match(str(x))]
        if bad:
            out.append(f"token-classification labels must be BIO tags ('O', 'B-TYPE', 'I-TYPE'); "
                       f"{bad} are not")
        if "O" not in spec.labels:
            out.append("token-classification labels must include 'O'")
        if spec.max_length < 16:
            out.append("max_length must be at least 16 for token classification")
        return out

    def coerce(self, spec, item):
        if isinstance(item, dict):
            raise DataError(f"this task does not take an object input; send {self.input_form}")
        return item  # a text, or a list of words

    def read(self, spec, location):
        return read_token_split(spec, location)

    def splits(self, spec, seed=0, max_train=None):
        train = read_token_split(spec, require_train(spec))
        if spec.dev:
            dev = read_token_split(spec, spec.dev)
        else:
            order = seeded_order(len(train), seed)
            n_dev = max(1, int(len(order) * spec.dev_fraction))
            train, dev = train.select(order[n_dev:]), train.select(order[:n_dev])
        if max_train is not None and len(train) > max_train:
            train = train.select(seeded_order(len(train), seed)[:max_train])
        return train, dev

    def featurize(self, spec, tokenizer, split, training=False):
        index = {t: i for i, t in enumerate(spec.labels)}
        enc = tokenizer(split.tokens, is_split_into_words=True, truncation=True,
                        max_length=spec.max_length)
        targets, meta = [], []
        for i, tags in enumerate(split.tags):
            words = enc.word_ids(i)
            row, seen = [], set()
            for w in words:
                first = w is not None and w not in seen
                row.append(index[tags[w]] if first else IGNORE)
                if w is not None:
                    seen.add(w)
            targets.append(row)
            meta.append(words)
        return Features(ids=enc["input_ids"], targets=targets, example=list(range(len(split))),
                        meta=meta)

    def batch_targets(self, feats, rows, width):
        out = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for j, r in enumerate(rows):
            t = feats.targets[r]
            out[j, : len(t)] = torch.tensor(t, dtype=torch.long)
        return out

    distils_unlabelled = True

    def unlabelled(self, spec, columns, source):
        """Texts cut into words at white space, every word's tag a placeholder `O`."""
        words = [text.split() for text in columns[0]]
        keep = [i for i, w in enumerate(words) if w]
        return TokenSplit([words[i] for i in keep], [["O"] * len(words[i]) for i in keep],
                          [[i + 1] * len(words[i]) for i in keep], source, "row")

    def distill_loss(self, outputs, teacher, temperature, mask=None):
        """Per word piece, the KL divergence of the teacher's tag distribution from the
        student's (every real piece, not only each word's first: the teacher has an opinion on
        all of them), padding masked out."""
        return super().distill_loss(outputs, teacher, temperature, mask)

    def loss(self, outputs, targets, weight=None):  # the card refuses class weights here
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1),
                               ignore_index=IGNORE)

    @staticmethod
    def word_tags(spec, words: list, logits: torch.Tensor, n_words: int) -> tuple[list[str], list]:
        """Each word's tag and probability from its first piece; words cut off by truncation
        are tagged O."""
        probs = logits.float().softmax(-1)
        tags, scores = ["O"] * n_words, [0.0] * n_words
        seen = set()
        for pos, w in enumerate(words):
            if w is None or w in seen or pos >= len(probs):
                continue
            seen.add(w)
            p, k = probs[pos].max(-1)
            tags[w], scores[w] = spec.labels[int(k)], float(p)
        return tags, scores

    def evaluate(self, spec, split, feats, outputs):
        from seqeval.metrics import f1_score, precision_score, recall_score

        pred = [self.word_tags(spec, feats.meta[i], outputs[i], len(split.tags[i]))[0]
                for i in range(len(split))]
        gold = split.tags
        return {"f1": float(f1_score(gold, pred, zero_division=0)),
                "precision": float(precision_score(gold, pred, zero_division=0)),
                "recall": float(recall_score(gold, pred, zero_division=0))}

    def encode(self, spec, tokenizer, item):
        """A text (words found by the tokenizer), or a list of words already split."""
        if isinstance(item, str):
            if not item.strip():
                raise DataError("got an empty text; send the text to tag")
            enc = tokenizer(item, truncation=True, max_length=spec.max_length,
                            return_offsets_mapping=True)
            words = enc.word_ids()
            spans: dict[int, list[int]] = {}
            for w, (a, b) in zip(words, enc["offset_mapping"]):
                if w is not None:
                    span = spans.setdefault(w, [a, b])
                    span[1] = b
            text = item
            word_spans = [tuple(spans[w]) for w in sorted(spans)]
            # words past the truncation point are not in `spans`; the reply says so
            truncated = len(tokenizer(item)["input_ids"]) > len(enc["input_ids"])
        elif isinstance(item, (list, tuple)) and item and all(isinstance(t, str) and t.strip()
                                                                for t in item):
            enc = tokenizer(list(item), is_split_into_words=True, truncation=True,
                            max_length=spec.max_length)
            words = enc.word_ids()
            text, word_spans, pos = " ".join(item), [], 0
            for t in item:
                word_spans.append((pos, pos + len(t)))
                pos += len(t) + 1
            truncated = max((w for w in words if w is not None), default=-1) < len(item) - 1
        else:
            raise DataError(f"this task takes a text or a non-empty list of words, got "
                            f"{shown(item)}")
        return [Row(enc["input_ids"], {"words": words, "spans": word_spans, "text": text,
                                       "truncated": truncated})]

    def decode(self, spec, rows, outputs, item):
        meta = rows[0].meta
        n_words = max((w for w in meta["words"] if w is not None), default=-1) + 1
        tags, scores = self.word_tags(spec, meta["words"], outputs[0], n_words)
        found = []
        for typ, first, last in entities(tags):
            start, end = meta["spans"][first][0], meta["spans"][last][1]
            found.append({"text": meta["text"][start:end], "type": typ, "start": start, "end": end,
                          "score": sum(scores[first : last + 1]) / (last - first + 1)})
        return {"entities": found, "tags": tags, "truncated": meta["truncated"]}
