"""What a user must hear about an adapter's scores (each kind computes its own metrics)."""

from __future__ import annotations

from ..tasks import TaskSpec


class QualityWarning(UserWarning):
    """A trained adapter looks worse than it should: a class never predicted, or below baseline."""


def quality_warnings(spec: TaskSpec, report: dict, train_counts: dict[str, int] | None,
                     metrics: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """What a user must hear about an adapter's dev (or eval) scores, one sentence each."""
    out = []
    for name, row in report.get("per_class", {}).items():
        rows = (train_counts or {}).get(name)
        if row["predicted"] == 0 and (rows is None or rows > 0):
            had = f"{rows} training rows, " if rows is not None else ""
            out.append(f"class {name!r} ({had}{row['support']} evaluation rows) is never predicted; "
                       "try --class-weights balanced (class_weights = \"balanced\" in the card) or "
                       "more epochs")
    ours, theirs = metrics.get(spec.metric), (baseline or {}).get(spec.metric)
    if ours is not None and theirs is not None:
        worse = ours > theirs if spec.metric == "mse" else ours < theirs
        if worse:
            out.append(f"the adapter's {spec.metric} {ours:.4f} is below the TF-IDF baseline's "
                       f"{theirs:.4f} on the same rows")
    return out
