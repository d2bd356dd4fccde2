"""`adapters-kit compare`: a tiny grid trained, measured through the engine, and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters_kit import compare
from adapters_kit.comparison import FIGURES, grid
from adapters_kit.comparison.report import Scale, recommendation
from adapters_kit.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_ran(r: dict) -> None:
    """Every figure there and plausible; adapter bytes are the files' sizes on disk."""
    assert "skipped" not in r, r
    for key in FIGURES:
        assert isinstance(r[key], (int, float)) and not isinstance(r[key], bool), (key, r)
    assert 0.0 <= r["dev_metric"] <= 1.0
    assert r["train_seconds"] > 0
    assert 0 < r["latency_p50_ms"] <= r["latency_p99_ms"]
    assert r["rows_per_second"] > 0
    path = Path(r["adapter"])
    assert r["adapter_bytes"] == sum((path / f).stat().st_size
                                     for f in ("adapter_model.safetensors", "adapter_config.json"))
    assert r["base_resident_bytes"] > 0 and r["base_disk_bytes"] > 0


def test_tiny_grid_gives_table_json_png_and_reasons(tiny_distilbert, tiny_albert, tmp_path):
    missing = str(tmp_path / "no-such-backbone")
    result = compare("support_intent", [tiny_distilbert, tiny_albert, missing], "fp32,bf16,4bit",
                     budget_s=2, max_train_examples=48, out=tmp_path / "cmp", progress=False,
                     threads=1)
    by = {(r["backbone"], r["precision"]): r for r in result.results}
    assert len(result.results) == 9 == len(by)  # nothing dropped
    for backbone in (tiny_distilbert, tiny_albert):
        for precision in ("fp32", "bf16"):
            _check_ran(by[backbone, precision])
        quant = by[backbone, "4bit"]  # runs only where this adapters_kit has quantized bases
        assert quant.get("skipped") or all(k in quant for k in FIGURES)
    for precision in ("fp32", "bf16", "4bit"):
        why = by[missing, precision]["skipped"]
        assert "no-such-backbone" in why
    # the store names say the combination
    names = {p.name for p in (tmp_path / "cmp" / "adapters").iterdir() if not p.name.startswith(".")}
    assert f"support_intent--{grid.slug(tiny_albert)}--bf16" in names
    # the files: the JSON is the record, the PNG a PNG, the table a row per combination
    record = json.loads(result.json_path.read_text())
    assert record["results"] == json.loads(json.dumps(result.results))
    assert record["recommendation"] == result.recommendation and "fastest within 0.5 points" \
        in result.recommendation and "smallest memory within 1 point" in result.recommendation
    assert result.png.read_bytes()[:8] == PNG_MAGIC and result.png.stat().st_size > 10_000
    lines = result.table().splitlines()
    assert len(lines) == 1 + 9 and sum("skipped:" in line for line in lines) >= 3


def test_same_settings_reuse_the_adapters_and_a_larger_budget_retrains(tiny_distilbert, tmp_path):
    kw = {"max_train_examples": 32, "out": tmp_path / "cmp", "progress": False, "threads": 1}
    first = compare("support_intent", [tiny_distilbert], "fp32", budget_s=2, **kw).results[0]
    again = compare("support_intent", [tiny_distilbert], "fp32", budget_s=2, **kw).results[0]
    checksums = Path(first["adapter"]) / "checksums.json"
    assert not first["reused"] and again["reused"]
    assert again["train_seconds"] == first["train_seconds"] and again["adapter"] == first["adapter"]
    before = checksums.read_bytes()
    larger = compare("support_intent", [tiny_distilbert], "fp32", budget_s=4, **kw).results[0]
    assert not larger["reused"] and checksums.read_bytes() != before
    _check_ran(larger)


def test_bad_grids_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="'fp16' is not one of fp32, bf16, 8bit, 4bit"):
        compare("support_intent", precisions="fp32,fp16", out=tmp_path)
    with pytest.raises(ConfigError, match="budget_s"):
        compare("support_intent", budget_s=0, out=tmp_path)
    with pytest.raises(ConfigError, match="precisions is empty"):
        compare("support_intent", precisions=",", out=tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_default_grid_lists_the_hub_backbones_offline_with_the_reason():
    cells = grid.plan(None, ["fp32"], "cpu")  # conftest sets HF_HUB_OFFLINE=1
    by = {c.backbone: c for c in cells}
    assert list(by) == ["embedded-distilbert", "embedded-albert", *grid.HUB_BACKBONES]
    assert by["embedded-distilbert"].skipped is None
    for name in grid.HUB_BACKBONES:
        assert by[name].skipped is None or "HF_HUB_OFFLINE" in by[name].skipped


def test_quantized_precisions_say_why_they_cannot_run():
    for p in grid.QUANTIZED:
        why = grid.quantized_problem(p, "cpu")
        if why is not None:  # before the quantized bases exist, or without bitsandbytes
            assert "quantized bases" in why or "bitsandbytes" in why


def test_recommendation_picks_within_the_margins():
    def row(b, p, metric, p50, mem):
        return {"backbone": b, "precision": p, "dev_metric": metric, "latency_p50_ms": p50,
                "base_resident_bytes": mem}

    results = [row("a", "fp32", 0.880, 10.0, 90e6), row("a", "bf16", 0.877, 6.0, 90e6),
               row("b", "8bit", 0.872, 12.0, 30e6), row("b", "4bit", 0.860, 14.0, 20e6),
               {"backbone": "c", "precision": "fp32", "skipped": "why"}]
    words = recommendation(results, Scale.of("accuracy", [0.88]))
    assert "best dev accuracy: a fp32 (88.0%)" in words
    assert "fastest within 0.5 points of the best: a bf16" in words
    assert "smallest memory within 1 point: b 8bit" in words  # 4bit is 2 points behind


def test_cli_compare_json_contract_and_backbones_show_the_last_run(tiny_distilbert, tmp_path,
                                                                   capsys):
    from adapters_kit.cli import main

    code = main(["compare", "support_intent", "--backbones", tiny_distilbert, "--precisions",
                 "fp32,8bit", "--budget-s", "2", "--max-train-examples", "32", "--threads", "1",
                 "--out", str(tmp_path / "cmp"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert set(out) >= {"results", "recommendation", "png"}
    assert [(r["backbone"], r["precision"]) for r in out["results"]] == \
        [(tiny_distilbert, "fp32"), (tiny_distilbert, "8bit")]
    _check_ran(out["results"][0])
    assert out["results"][1].get("skipped") or all(k in out["results"][1] for k in FIGURES)
    assert Path(out["png"]).is_file()
    events = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    assert {"cell", "result"} <= {e.get("event") for e in events}
    assert main(["backbones"]) == 0
    shown = capsys.readouterr().out
    assert "Last `adapters-kit compare`" in shown and "support_intent" in shown
    assert "fastest within 0.5 points" in shown
    assert main(["backbones", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["last_compare"]["results"] == out["results"]


@pytest.mark.slow
def test_embedded_grid_on_the_demo_task(tmp_path):
    # equal epochs, not equal time: the scores must not depend on how loaded the machine is
    result = compare("support_intent", "embedded-distilbert,embedded-albert", "fp32,bf16",
                     epochs=3, max_train_examples=240, out=tmp_path / "cmp", progress=False,
                     threads=1)
    assert len(result.results) == 4
    for r in result.results:
        _check_ran(r)
        assert r["dev_metric"] > 0.5  # four intents: chance is 0.25
    # one base of 22.7M fp32 parameters, held whole: about 91 MB either way
    assert all(80e6 < r["base_resident_bytes"] < 100e6 for r in result.results)
