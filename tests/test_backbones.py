"""Backbones: architecture checks, base folders, presets, fingerprints."""

from __future__ import annotations

import pytest
import torch
from helpers import make_tiny

from adapters_kit import Backbone, BackboneError
from adapters_kit.backbones import fingerprint, target_modules


def test_unsupported_architecture_is_refused(tmp_path):
    folder = make_tiny(tmp_path / "bert", "bert")
    with pytest.raises(BackboneError) as e:
        Backbone.resolve(folder)
    assert "'bert'" in str(e.value) and "distilbert" in str(e.value) and "albert" in str(e.value)


def test_missing_backbone_says_what_is_accepted(tmp_path):
    with pytest.raises(BackboneError, match="embedded-distilbert"):
        Backbone.resolve(tmp_path / "nope")
    with pytest.raises(BackboneError, match="embedded-albert"):
        Backbone.resolve("embedded-bert")


def test_base_folder_is_deterministic_with_a_zero_classifier(tiny_backbone):
    bb = Backbone.resolve(tiny_backbone)
    assert Backbone.resolve(tiny_backbone).path == bb.path  # materialised once
    a, b = bb.load_model(3), bb.load_model(3)
    assert torch.count_nonzero(a.classifier.weight) == 0
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    if bb.arch == "distilbert":
        assert torch.equal(a.pre_classifier.weight, torch.eye(a.pre_classifier.weight.shape[0]))


def test_fingerprint_tracks_base_weights_not_the_classifier(tiny_distilbert):
    bb = Backbone.resolve(tiny_distilbert)
    m2, m5 = bb.load_model(2), bb.load_model(5)
    assert fingerprint(m2) == fingerprint(m5)
    with torch.no_grad():
        m5.distilbert.transformer.layer[0].ffn.lin1.weight[0, 0] += 1e-3
    assert fingerprint(m2) != fingerprint(m5)


def test_presets():
    assert target_modules("distilbert", "qv", head="full") == ["q_lin", "v_lin"]
    assert target_modules("albert", "qv") == ["query", "value", "pooler", "classifier"]
    assert "ffn_output" in target_modules("albert", "all-linear")
    with pytest.raises(BackboneError, match="all-linear"):
        target_modules("distilbert", "everything")
