"""The training-curve PNG saved in every adapter directory."""

from __future__ import annotations

import io


def curves_png(losses: list[tuple[int, float]], evals: list[tuple[int, float]], metric: str,
               title: str) -> bytes:
    """Training loss (smoothed) and the dev metric against the step, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2), dpi=100)
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
