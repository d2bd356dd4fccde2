"""Task cards ship as package data, `{shared}` paths resolve, TaskSpec keeps what a card chose,
and the name rules and kind names have one owner each."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from helpers import ROOT

import adapters_kit
from adapters_kit import (
    DataError,
    TaskError,
    TaskSpec,
    load_card,
)
from adapters_kit import tasks as tasks_mod
from adapters_kit.tasks import reading, registry
from adapters_kit.tasks.reading import load_splits

CARDS = sorted(p.stem for p in (ROOT / "adapters_kit" / "tasks" / "cards").glob("*.toml"))

# -- task cards are package data, `{shared}` resolution ------------------------------------------


def test_bundled_cards_are_package_data():
    cards = tasks_mod.bundled_cards_dir()
    assert cards == Path(adapters_kit.__file__).resolve().parent / "tasks" / "cards"
    assert {p.stem for p in cards.glob("*.toml")} >= {"sst2", "support_intent", "squad"}
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["adapters_kit"]
    assert "tasks/cards/*.toml" in package_data and "tasks/cards/data/*.tsv" in package_data
    assert Path(tasks_mod.get_task("support_intent").train).is_file()  # the demo data ships too


def test_shared_resolves_from_the_variable_or_beside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("ADAPTERS_KIT_SHARED_DATA", raising=False)
    assert reading.shared_data_dir() == ROOT.parent / "shared" / "data"
    monkeypatch.setenv("ADAPTERS_KIT_SHARED_DATA", str(tmp_path))
    assert reading.shared_data_dir() == tmp_path


def test_unknown_shared_folder_fails_with_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "shared_data_dir", lambda: None)  # as in a wheel install
    card = tmp_path / "c.toml"
    card.write_text('name = "c"\nlabels = ["a", "b"]\n[data]\ntrain = "{shared}/c/train.tsv"\n')
    spec = load_card(card)
    assert spec.train == "{shared}/c/train.tsv"  # listing the card still works
    with pytest.raises(DataError, match="ADAPTERS_KIT_SHARED_DATA"):
        load_splits(spec)


def _site_packages() -> list[str]:
    return [p for p in [*site.getsitepackages(), site.getusersitepackages()] if os.path.isdir(p)]


@pytest.mark.slow
def test_wheel_install_lists_the_bundled_cards(tmp_path):
    """`pip install .` (not editable) into a fresh venv: the cards come with the package."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "adapters", "adapters-demo"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # `--system-site-packages` reaches the base interpreter's packages; when this test runs in a
    # venv itself, its packages (torch, setuptools, ...) come in through a .pth file, after the
    # new venv's own site-packages, so the installed adapters_kit is the one imported.
    Path(purelib, "zz_current_env.pth").write_text("\n".join(_site_packages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in (
        "PYTHONPATH", "ADAPTERS_KIT_SHARED_DATA", "ADAPTERS_KIT_TASKS", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "--no-build-isolation", "--no-index", "-q", str(src)],
                   check=True, timeout=600, env=env, cwd=tmp_path)
    where = subprocess.run([py, "-c", "import adapters_kit; print(adapters_kit.__file__)"],
                           capture_output=True, text=True, check=True, env=env, cwd=tmp_path)
    assert where.stdout.strip().startswith(purelib), where.stdout
    out = subprocess.run([venv / "bin" / "adapters-kit", "tasks", "--json"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    listed = {t["name"]: t for t in json.loads(out.stdout)["tasks"]}
    assert set(CARDS) <= set(listed), sorted(set(CARDS) - set(listed))
    assert Path(listed["support_intent"]["train"]).is_file()  # the demo data is installed too
    assert listed["sst2"]["train"].startswith("{shared}")  # no checkout to sit beside
    code = ("from adapters_kit import get_task\nfrom adapters_kit.tasks.reading import load_splits\n"
            "load_splits(get_task('sst2'))\n")
    fail = subprocess.run([py, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert fail.returncode != 0 and "DataError" in fail.stderr
    assert "set ADAPTERS_KIT_SHARED_DATA" in fail.stderr, fail.stderr[-2000:]


# -- TaskSpec: unset means the kind's default; a value given is kept -------------------------------


def test_a_chosen_value_equal_to_another_kinds_default_is_kept():
    qa = TaskSpec(name="q", kind="extractive-qa", max_length=128, doc_stride=32)
    assert qa.max_length == 128
    assert TaskSpec(name="q", kind="extractive-qa").max_length == 384
    assert TaskSpec(name="c", labels=["a", "b"]).max_length == 128
    ner = TaskSpec(name="n", kind="token-classification", labels=["O", "B-X", "I-X"],
                   text_fields=["text"], label_field="label")
    assert ner.text_fields == ["text"] and ner.label_field == "label"
    unset = TaskSpec(name="n", kind="token-classification", labels=["O", "B-X", "I-X"])
    assert unset.text_fields == ["tokens"] and unset.label_field == "tags"
    qa2 = TaskSpec(name="q", kind="extractive-qa")
    assert qa2.text_fields == ["question", "context"] and qa2.label_field == "answers"


def test_specs_round_trip_and_old_task_json_loads_the_same():
    for spec in (TaskSpec(name="q", kind="extractive-qa", max_length=128, doc_stride=32),
                 TaskSpec(name="q", kind="extractive-qa"),
                 TaskSpec(name="n", kind="token-classification", labels=["O", "B-X", "I-X"],
                          text_fields=["text"]),
                 TaskSpec(name="c", labels=["a", "b"], text_fields=["a", "b"])):
        again = TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec
    # a task.json written before: every field explicit, the kind defaults already applied
    old = {**TaskSpec(name="q", kind="extractive-qa").to_dict(), "max_length": 384,
           "text_fields": ["question", "context"], "label_field": "answers"}
    assert TaskSpec.from_dict(old) == TaskSpec(name="q", kind="extractive-qa")
    with pytest.raises(TaskError, match="max_length must be an integer or null"):
        TaskSpec(name="c", labels=["a", "b"], max_length="long")


# -- one owner for the name rules ---------------------------------------------------------------


def test_task_and_served_names_have_one_owner():
    from adapters_kit.server import admin, app

    assert tasks_mod.is_task_name("customer_intent")
    assert not tasks_mod.is_task_name("Customer.Sentiment")
    assert tasks_mod.is_served_name("Customer.Sentiment") and tasks_mod.is_served_name("sst2")
    for bad in ("..", "a..b", ".hidden", "a/b", "", "x" * 129, "a\n", None):
        assert not tasks_mod.is_served_name(bad), bad
    for name in CARDS:  # every task name is a served name
        assert tasks_mod.is_task_name(name) and tasks_mod.is_served_name(name)
    assert not hasattr(admin, "NAME") and app.is_served_name is tasks_mod.is_served_name
    with pytest.raises(TaskError, match="lower-case"):  # `$` let a trailing newline through
        TaskSpec(name="abc\n", labels=["a", "b"])


def test_kind_names_are_spelled_only_inside_kinds():
    """The built-in kinds' names appear as string literals only in kinds/ (their own
    `name`s and the registry table); elsewhere code asks the kind, or uses DEFAULT_KIND."""
    import re

    pattern = re.compile(r'"(classification|multi-label|regression|token-classification|extractive-qa)"')
    package = Path(__file__).resolve().parent.parent / "adapters_kit"
    outside = [f"{p.relative_to(package)}:{n}" for p in sorted(package.rglob("*.py"))
               if "kinds" not in p.relative_to(package).parts
               for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert outside == []
