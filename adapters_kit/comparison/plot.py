"""`compare.png`: dev metric against latency, and against the base's memory, one point per
combination that ran, labelled with its backbone and precision."""

from __future__ import annotations

import io

MARKERS = {"fp32": "o", "bf16": "s", "8bit": "^", "4bit": "v"}


def compare_png(results: list[dict], ylabel: str, shown, higher_is_better: bool, title: str) -> bytes:
    """The two panels as PNG bytes (empty panels, with a note, when nothing ran); `shown` maps
    a dev metric to the value plotted (e.g. a fraction to percent)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    ran = [r for r in results if "skipped" not in r]
    fig = Figure(figsize=(11, 4.6), dpi=100)
    FigureCanvasAgg(fig)  # draws without choosing a global backend (a notebook keeps its own)
    axes = fig.subplots(1, 2, sharey=True)
    colours = {b: f"C{i}" for i, b in enumerate(dict.fromkeys(r["backbone"] for r in ran))}
    ys = [shown(r["dev_metric"]) for r in ran]
    y_lo, y_hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = max(y_hi - y_lo, 1e-6) * 0.15 + (1.0 if y_hi == y_lo else 0.0)
    panels = ((axes[0], "latency_p50_ms", "latency p50, one request of one input (ms)", 1.0),
              (axes[1], "base_resident_bytes", "base in memory (MB)", 1e-6))
    for ax, key, xlabel, scale in panels:
        xs = [r[key] * scale for r in ran]
        x_hi = max(xs, default=1.0) or 1.0
        ax.set_xlim(0, x_hi * 1.6)  # from zero, with room on the right for the labels
        ax.set_ylim(y_lo - pad, y_hi + pad * 2.5)
        for r, x, y in zip(ran, xs, ys):
            ax.scatter(x, y, color=colours[r["backbone"]], marker=MARKERS.get(r["precision"], "o"),
                       s=50, zorder=3)
        # labels beside the points, pushed apart vertically where they would overlap, each
        # joined to its point by a line (fp32 and bf16 share a base's bytes: one x, two points)
        gap = (y_hi - y_lo + 2 * pad) * 0.07
        placed: list[float] = []
        for i in sorted(range(len(ran)), key=lambda i: (ys[i], xs[i])):
            y_text = max([ys[i]] + [y + gap for y in placed])
            placed.append(y_text)
            ax.annotate(f"{ran[i]['backbone']} {ran[i]['precision']}", (xs[i], ys[i]),
                        xytext=(xs[i] + x_hi * 0.06, y_text), fontsize=7, va="center",
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6})
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.set_title(f"better: {'up' if higher_is_better else 'down'} and left", fontsize=9)
        if not ran:
            ax.text(0.5, 0.5, "no combination ran here", ha="center", va="center",
                    transform=ax.transAxes)
    axes[0].set_ylabel(ylabel)
    handles = [Line2D([], [], color=c, marker="o", ls="", label=b) for b, c in colours.items()]
    handles += [Line2D([], [], color="0.3", marker=m, ls="", label=p) for p, m in MARKERS.items()
                if any(r["precision"] == p for r in ran)]
    if handles:  # below the panels, where it hides no point
        fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

