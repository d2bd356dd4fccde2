"""The README's table of training defaults is the dataclasses' defaults."""

from __future__ import annotations

import ast
import re
from dataclasses import MISSING, fields

from helpers import ROOT

from adapters_kit import TaskSpec, TrainConfig


def _defaults() -> dict:
    """Each field's default; for a TaskSpec field left unset (None: the kind's default), what a
    classification card gets."""
    resolved = TaskSpec(name="t", labels=["a", "b"])
    out = {}
    for cls in (TaskSpec, TrainConfig):
        for f in fields(cls):
            if f.default is not MISSING:
                value = f.default
                if cls is TaskSpec and value is None and f.name in ("max_length", "label_field",
                                                                     "text_fields"):
                    value = getattr(resolved, f.name)
                out.setdefault(f.name, value)
    return out


def test_readme_training_defaults_match_the_dataclasses():
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- training-defaults")[1].split("<!-- /training-defaults -->")[0]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", table, flags=re.M)
    assert len(rows) >= 20
    defaults = _defaults()
    for name, shown in rows:
        assert name in defaults, f"README lists {name!r}, which is no TaskSpec/TrainConfig field"
        assert ast.literal_eval(shown) == defaults[name], f"README says {name} = {shown}"
    # every training knob with a concrete default is listed (card-only QA fields aside)
    listed = {n for n, _ in rows}
    knobs = {f.name for f in fields(TrainConfig)} - {"progress", "resume", "baseline", "overwrite",
                                                       "threads", "dropout"}
    assert knobs <= listed, sorted(knobs - listed)
