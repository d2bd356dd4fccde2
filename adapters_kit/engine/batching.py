"""What a batch is made of before it reaches the model: the inputs a request may carry and the
planner that cuts rows into forward passes."""

from __future__ import annotations

from collections.abc import Sequence

TextInput = str | tuple[str, str] | list[str] | dict
"""One request's input: a text, a (question, context) pair, pre-split words, or a kind's dict."""


def plan_chunks(lengths: Sequence[int], max_rows: int | None = None,
                max_tokens: int | None = None) -> list[list[int]]:
    """Row indices cut into forward passes: sorted by length, so short rows are not padded to
    long ones, each chunk at most `max_rows` rows and `max_tokens` padded positions (rows x its
    longest row). A row longer than `max_tokens` gets a chunk of its own.

    The one planner of the engine (`MultiTaskModel.run_ids`, `logits_mixed`), the server's
    batcher, evaluation and the benchmarks: scatter each chunk's outputs back by index.
    """
    chunks: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        n = lengths[i]  # ascending: this row is the chunk's longest
        last = chunks[-1] if chunks else None
        if last is not None and (max_rows is None or len(last) < max_rows) \
                and (max_tokens is None or (len(last) + 1) * n <= max_tokens):
            last.append(i)
        else:
            chunks.append([i])
    return chunks
