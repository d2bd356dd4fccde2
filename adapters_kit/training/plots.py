"""The training-curve PNG saved in every adapter directory."""

from __future__ import annotations

import io

import numpy as np


def curves_png(losses: list[tuple[int, float]], evals: list[tuple[int, float]], metric: str,
               title: str) -> bytes:
    """Training loss (smoothed) and the dev metric against the step, as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2), dpi=100)
    FigureCanvasAgg(fig)  # draws without choosing a global backend (a notebook keeps its own)
    ax = fig.add_subplot(1, 2, 1)
    if losses:
        steps, values = zip(*losses)
        k = max(1, len(values) // 50)
        smooth = [sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1])
                  for i in range(len(values))]
        ax.plot(steps, values, alpha=0.25, color="tab:blue")
        ax.plot(steps, smooth, color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax2 = fig.add_subplot(1, 2, 2)
    if evals:
        steps, values = zip(*evals)
        ax2.plot(steps, values, marker="o", color="tab:green")
    ax2.set_xlabel("step")
    ax2.set_ylabel(f"dev {metric}")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def confusion_png(matrix: list[list[int]], labels: list[str], title: str) -> bytes:
    """A confusion matrix (rows: true label, columns: predicted) with counts, as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(labels)
    side = min(12.0, 2.5 + 0.6 * n)
    fig = Figure(figsize=(side, side), dpi=100)
    FigureCanvasAgg(fig)  # draws without choosing a global backend
    ax = fig.add_subplot(1, 1, 1)
    values = np.asarray(matrix, dtype=float)
    rows = values.sum(1, keepdims=True)
    ax.imshow(np.divide(values, rows, out=np.zeros_like(values), where=rows > 0), cmap="Blues",
              vmin=0, vmax=1)  # colour: share of the true class; text: the count
    for i in range(n):
        for j in range(n):
            share = values[i, j] / rows[i, 0] if rows[i, 0] else 0
            ax.text(j, i, str(int(values[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if share > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
