"""The documentation's checked content: the training defaults table in docs/training.md is the
dataclasses' defaults, and the README's test command is the one CI runs."""

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


def test_training_guide_defaults_match_the_dataclasses():
    text = (ROOT / "docs" / "training.md").read_text()
    table = text.split("<!-- training-defaults")[1].split("<!-- /training-defaults -->")[0]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", table, flags=re.M)
    assert len(rows) >= 20
    defaults = _defaults()
    for name, shown in rows:
        assert name in defaults, f"docs/training.md lists {name!r}, which is no TaskSpec/TrainConfig field"
        assert ast.literal_eval(shown) == defaults[name], f"docs/training.md says {name} = {shown}"
    # every training knob with a concrete default is listed (card-only QA fields aside)
    listed = {n for n, _ in rows}
    knobs = {f.name for f in fields(TrainConfig)} - {"progress", "resume", "baseline", "overwrite",
                                                       "threads", "dropout"}
    assert knobs <= listed, sorted(knobs - listed)


def test_the_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start")[1].split("\n## ")[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quick_start)
    assert len(commands) == 2, "Quick start has the demo command and the test command"
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) < 250


def _anchors(text: str) -> set[str]:
    """GitHub's anchor for each heading: lower case, punctuation but `-` and `_` dropped,
    spaces as `-`."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_links_between_the_documents_resolve():
    docs = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "RESULTS.md",
            *sorted((ROOT / "docs").glob("*.md"))]
    texts = {p: re.sub(r"```.*?```", "", p.read_text(), flags=re.S) for p in docs}
    broken = []
    for path, text in texts.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and anchor not in _anchors(texts.get(linked) or linked.read_text()):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
