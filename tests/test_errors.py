"""One error hierarchy: package errors reach the CLI as one clear line, real bugs keep their
traceback, and an interrupted training exits 130."""

from __future__ import annotations

import sys

import pytest

from adapters_kit import (
    AdaptersKitError,
    MultiTaskModel,
)

# -- one error hierarchy ------------------------------------------------------------------------


def test_a_task_that_is_not_loaded_is_an_unknown_task_error(tiny_distilbert):
    from adapters_kit import UnknownTaskError

    model = MultiTaskModel(tiny_distilbert)
    for call in (lambda: model.unload("nope"), lambda: model.predict("nope", ["x"]),
                 lambda: model.replace("nope", "/nowhere")):
        with pytest.raises(UnknownTaskError) as e:
            call()
        assert isinstance(e.value, KeyError) and isinstance(e.value, AdaptersKitError)
        assert str(e.value).startswith("task 'nope' is not loaded")  # not KeyError's quoting


def test_cli_reports_package_errors_and_shows_a_real_key_error(monkeypatch, capsys):
    from adapters_kit import UnknownTaskError, cli

    def unknown(args):
        raise UnknownTaskError("task 'x' is not loaded; loaded: []")

    monkeypatch.setattr(cli, "cmd_tasks", unknown)
    assert cli.main(["tasks"]) == 2
    assert "error: task 'x' is not loaded" in capsys.readouterr().err

    def bug(args):
        return {}["missing"]

    monkeypatch.setattr(cli, "cmd_tasks", bug)
    with pytest.raises(KeyError, match="missing"):  # a bug: its traceback, not a user error
        cli.main(["tasks"])


def test_cli_exits_130_when_training_is_interrupted(monkeypatch, capsys):
    from adapters_kit import TrainingInterrupted, cli

    train_module = sys.modules["adapters_kit.training.loop"]

    def stopped(*args, **kwargs):
        raise TrainingInterrupted("stopped after step 3 (resume by training again)", step=3,
                                  total_steps=6, checkpoint=None)

    monkeypatch.setattr(train_module, "train", stopped)
    assert cli.main(["train", "sst2", "--out", "/nonexistent/x"]) == 130
    assert "resume by training again" in capsys.readouterr().err  # the error says what comes next


