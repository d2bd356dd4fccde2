"""The command line's flags: every one has help, and the settings flags are the config fields."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from adapters_kit import TrainConfig
from adapters_kit.cli import build_parser
from adapters_kit.server.config import ServeConfig


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for the top parser and every subcommand under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _dests(*path: str) -> set[str]:
    parser = dict(_commands(build_parser()))[path]
    return {a.dest for a in parser._actions}


def test_every_flag_of_every_command_has_help():
    missing = []
    for path, parser in _commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{' '.join(path)} {c.dest}" for c in action._choices_actions
                            if not (c.help or "").strip()]
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path) or 'adapters-kit'} "
                               f"{'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"flags without help: {missing}"


def test_every_train_config_field_is_a_flag_of_train_or_excluded_with_a_reason():
    from adapters_kit.cli.train import TRAIN_FLAGS, TRAIN_MANY_FLAGS

    for path, flags in ((("train",), TRAIN_FLAGS), (("train-many",), TRAIN_MANY_FLAGS)):
        assert all(reason.strip() for reason in flags.skip.values())
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        absent = fields - _dests(*path) - set(flags.skip)
        assert not absent, f"TrainConfig fields neither flags of {path[0]} nor skipped: {absent}"
        assert not set(flags.skip) & _dests(*path)
    assert set(TRAIN_FLAGS.skip) == {"progress"}  # train takes every other setting


def test_every_serve_config_field_is_a_flag_of_serve():
    fields = {f.name for f in dataclasses.fields(ServeConfig)}
    assert fields <= _dests("serve"), fields - _dests("serve")


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_help_shows_the_fields_docstrings(capsys):
    text = _help(capsys, "train")
    assert "Stop after this many evaluations without a better dev metric. (default: 4)" in text
    assert "Share of the steps over which the learning rate warms up linearly" in text
    text = _help(capsys, "serve")
    assert "Most inputs in one predict request; more gets 413. (default: 64; or " \
        "ADAPTERS_KIT_MAX_INPUTS)" in text


def test_the_flags_keep_their_names_and_build_the_config():
    from adapters_kit.cli.train import TRAIN_FLAGS

    args = build_parser().parse_args(["train", "sst2", "--lr", "0.01", "--no-resume", "--rslora",
                                      "--class-weights", "neg=2,pos=1", "--targets", "attention",
                                      "--double-quant", "--quantize", "4bit", "--threads", "2"])
    given = TRAIN_FLAGS.given(args)
    assert given == {"learning_rate": 0.01, "resume": False, "use_rslora": True,
                     "class_weights": {"neg": 2.0, "pos": 1.0}, "targets": "attention",
                     "double_quant": True, "quantize": "4bit", "threads": 2}
    assert TrainConfig(**given).learning_rate == 0.01
    # nothing given: no field set, so TrainConfig's (and the card's) defaults apply
    assert TRAIN_FLAGS.given(build_parser().parse_args(["train", "sst2"])) == {}
    for bad in (["--targets", "everything"], ["--threads", "0"], ["--head", "big"]):
        with pytest.raises(Exception, match="invalid|not a thread count"):
            build_parser().parse_args(["train", "sst2", *bad])


def test_serve_flags_not_given_leave_the_environment_its_say():
    from adapters_kit.cli.serve import SERVE_FLAGS

    assert SERVE_FLAGS.given(build_parser().parse_args(["serve"])) == {}
    args = build_parser().parse_args(["serve", "--store", "s3://b/p", "--no-jobs", "--port", "9"])
    assert SERVE_FLAGS.given(args) == {"store": "s3://b/p", "jobs": False, "port": 9}


def test_serve_precision_choices_are_the_engines():
    from adapters_kit.engine.model import PRECISIONS
    from adapters_kit.server.config import ServePrecision

    assert set(typing.get_args(ServePrecision)) == PRECISIONS


def test_a_field_added_to_the_config_becomes_a_flag_with_its_docstring():
    from adapters_kit.cli.flags import ConfigFlags

    @dataclasses.dataclass(frozen=True)
    class _Wider(TrainConfig):
        label_smoothing: float = 0.0
        """Spread this share of each target over the other classes."""
        stages: list[int] = dataclasses.field(default_factory=list)
        """Epochs of each stage."""

    flags = ConfigFlags(_Wider, skip={"class_weights": "a test of the others"})
    parser = argparse.ArgumentParser()
    flags.add_to(parser)
    args = parser.parse_args(["--label-smoothing", "0.1", "--stages", "1", "2", "--no-baseline"])
    assert flags.given(args) == {"label_smoothing": 0.1, "stages": [1, 2], "baseline": False}
    help_text = " ".join(parser.format_help().split())
    assert "--label-smoothing LABEL_SMOOTHING Spread this share of each target over the other " \
        "classes. (default: 0.0)" in help_text


def test_a_field_without_a_docstring_or_a_flag_type_is_refused_by_name():
    from adapters_kit.cli.flags import ConfigFlags

    @dataclasses.dataclass
    class Bare:
        epochs: int = 1

    @dataclasses.dataclass
    class Weights:
        class_weights: dict[str, float] | None = None
        """Per-label weights."""

    with pytest.raises(TypeError, match="Bare.epochs has no docstring"):
        ConfigFlags(Bare).add_to(argparse.ArgumentParser())
    with pytest.raises(TypeError, match="field 'class_weights' has type"):
        ConfigFlags(Weights).add_to(argparse.ArgumentParser())
    with pytest.raises(TypeError, match=r"\['nope'\] are no fields"):
        ConfigFlags(TrainConfig, skip={"nope": "gone"}).names()
