"""Importing, plotting and loading leave process-wide settings (matplotlib, transformers,
datasets) as they were."""

from __future__ import annotations

import subprocess
import sys

from helpers import sentiment_rows, write_tsv

from adapters_kit import (
    TaskSpec,
)
from adapters_kit.tasks.reading import load_splits

# -- no process-wide side effects ---------------------------------------------------------------


def test_plots_leave_the_matplotlib_backend_alone():
    code = ("import matplotlib\nmatplotlib.use('svg')\n"
            "from adapters_kit.training.plots import confusion_png, curves_png\n"
            "png = curves_png([(1, 0.5), (2, 0.4)], [(2, 0.8)], 'accuracy', 't')\n"
            "png2 = confusion_png([[3, 1], [0, 4]], ['a', 'b'], 't')\n"
            "assert png.startswith(b'\\x89PNG') and png2.startswith(b'\\x89PNG')\n"
            "print(matplotlib.get_backend())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "svg"


def test_loading_leaves_transformers_and_datasets_settings_as_they_were(tiny_distilbert, tmp_path):
    import datasets
    from transformers.utils import logging as hf

    from adapters_kit import Backbone

    before = hf.get_verbosity(), hf.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(), \
        datasets.logging.get_verbosity()
    hf.set_verbosity_info()
    hf.enable_progress_bar()
    datasets.enable_progress_bars()
    try:
        backbone = Backbone.resolve(tiny_distilbert)
        backbone.tokenizer()
        backbone.load_model(2)
        train = write_tsv(tmp_path / "t.tsv", ["text", "label"], sentiment_rows(20))
        load_splits(TaskSpec(name="s", labels=["neg", "pos"], train=str(train)))
        assert hf.get_verbosity() == hf.INFO and hf.is_progress_bar_enabled()
        assert datasets.is_progress_bar_enabled()
        assert datasets.logging.get_verbosity() == before[3]
    finally:
        hf.set_verbosity(before[0])
        (hf.enable_progress_bar if before[1] else hf.disable_progress_bar)()
        (datasets.enable_progress_bars if before[2] else datasets.disable_progress_bars)()


