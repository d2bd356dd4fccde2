"""Adapter files: save->load round trips, and every kind of bad file is refused whole."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import make_tiny, quick

from adapters_kit import AdapterFileError, MultiTaskModel, read_adapter, train
from adapters_kit.adapters.store import WEIGHTS, write_checksums
from adapters_kit.files import atomic_directory


@pytest.fixture()
def adapter(tiny_distilbert, sentiment_task, tmp_path):
    return train(sentiment_task, tmp_path / "adapters" / "sent", quick(tiny_distilbert, epochs=1)).path


def broken_copy(adapter, tmp_path, name="broken"):
    dst = tmp_path / name
    shutil.copytree(adapter, dst)
    return dst


def assert_refused(model, path, match):
    before = dict(model.tasks)
    with pytest.raises(AdapterFileError, match=match) as e:
        model.load(path)
    assert "Nothing was loaded" in str(e.value) or "nothing was loaded" in str(e.value)
    assert model.tasks == before


def test_save_then_load_gives_the_same_logits(tiny_distilbert, sentiment_task, tmp_path, monkeypatch):
    """The trained model's own logits, taken just before it is saved, come back after a load."""
    import sys

    from transformers import AutoTokenizer

    train_module = sys.modules["adapters_kit.training.save"]  # where training writes the adapter
    texts = ["the film was great lovely", "a plot was dull awful"]
    tok, save, trained = AutoTokenizer.from_pretrained(tiny_distilbert), train_module.save_adapter, []

    def save_and_record(out_dir, model, *args, **kwargs):
        model.eval()
        with torch.no_grad():
            trained.append(torch.cat([model(**tok(t, return_tensors="pt")).logits for t in texts]))
        return save(out_dir, model, *args, **kwargs)

    monkeypatch.setattr(train_module, "save_adapter", save_and_record)
    adapter = train(sentiment_task, tmp_path / "adapters" / "sent", quick(tiny_distilbert, epochs=1)).path
    a = MultiTaskModel(tiny_distilbert)
    a.load(adapter)
    b = MultiTaskModel(tiny_distilbert)
    b.load(adapter)
    assert torch.equal(a.logits("tiny_sentiment", texts), b.logits("tiny_sentiment", texts))
    (in_memory,) = trained
    assert in_memory.abs().max() > 0  # a trained head, not the zero classifier of the base
    torch.testing.assert_close(a.logits("tiny_sentiment", texts), in_memory, rtol=0, atol=1e-5)


def test_wrong_checksum(adapter, tiny_distilbert, tmp_path):
    bad = broken_copy(adapter, tmp_path)
    meta = json.loads((bad / "task.json").read_text())
    meta["labels_note"] = "edited"
    (bad / "task.json").write_text(json.dumps(meta))
    assert_refused(MultiTaskModel(tiny_distilbert), bad, "checksum mismatch for task.json")


def test_truncated_safetensors(adapter, tiny_distilbert, tmp_path):
    bad = broken_copy(adapter, tmp_path)
    data = (bad / WEIGHTS).read_bytes()
    (bad / WEIGHTS).write_bytes(data[: len(data) // 2])
    sums = json.loads((bad / "checksums.json").read_text())  # even with a matching checksum
    from adapters_kit.files import sha256_file

    sums[WEIGHTS] = sha256_file(bad / WEIGHTS)
    (bad / "checksums.json").write_text(json.dumps(sums))
    # refused from the header's own account of the file, before the tensors are read
    assert_refused(MultiTaskModel(tiny_distilbert), bad, f"{WEIGHTS} is {len(data) // 2} bytes but "
                   r"its header accounts for \d+ \(the file is truncated")


def test_a_weights_file_that_the_header_check_passes_but_safetensors_refuses(adapter,
                                                                              tiny_distilbert,
                                                                              tmp_path):
    bad = broken_copy(adapter, tmp_path)
    data = bytearray((bad / WEIGHTS).read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    key = next(k for k in header if k != "__metadata__")
    header[key]["shape"] = [header[key]["shape"][0] + 1, *header[key]["shape"][1:]]  # wrong size
    raw = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(raw) == n
    (bad / WEIGHTS).write_bytes(bytes(data[:8]) + raw + bytes(data[8 + n :]))
    write_checksums(bad)
    assert_refused(MultiTaskModel(tiny_distilbert), bad, "not a readable safetensors")


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_one_non_finite_value_in_one_tensor_is_found_and_named(adapter, tmp_path, bad):
    from safetensors.torch import load_file, save_file

    dst = broken_copy(adapter, tmp_path)
    tensors = load_file(str(dst / WEIGHTS))
    victim = sorted(k for k in tensors if ".lora_B." in k)[-1]
    tensors[victim].view(-1)[3] = float(bad)
    save_file(tensors, str(dst / WEIGHTS), metadata={"format": "pt"})
    write_checksums(dst)
    with pytest.raises(AdapterFileError, match="NaN or infinite") as e:
        read_adapter(dst)
    assert victim in str(e.value)


def test_large_finite_weights_whose_float32_sum_overflows_are_not_refused(adapter, tmp_path):
    """The one-pass check sums in float32; an overflow there is checked tensor by tensor."""
    from safetensors.torch import load_file, save_file

    dst = broken_copy(adapter, tmp_path)
    tensors = {k: torch.full_like(v, 3e38) for k, v in load_file(str(dst / WEIGHTS)).items()}
    save_file(tensors, str(dst / WEIGHTS), metadata={"format": "pt"})
    write_checksums(dst)
    assert torch.equal(read_adapter(dst).tensors[sorted(tensors)[0]], tensors[sorted(tensors)[0]])
    bf16 = {k: v.to(torch.bfloat16) for k, v in tensors.items()}  # not float32: per tensor
    bf16[sorted(bf16)[0]].view(-1)[0] = float("nan")
    save_file(bf16, str(dst / WEIGHTS), metadata={"format": "pt"})
    write_checksums(dst)
    with pytest.raises(AdapterFileError, match="NaN or infinite"):
        read_adapter(dst)


def test_pickle_is_never_read(adapter, tiny_distilbert, tmp_path):
    bad = broken_copy(adapter, tmp_path)
    torch.save({"x": torch.zeros(1)}, bad / "adapter_model.bin")
    assert_refused(MultiTaskModel(tiny_distilbert), bad, "pickle")


def test_shapes_that_do_not_fit_the_base(sentiment_task, tmp_path):
    wide = make_tiny(tmp_path / "wide", "distilbert", dim=48)
    narrow = make_tiny(tmp_path / "narrow", "distilbert", dim=32)
    path = train(sentiment_task, tmp_path / "w", quick(str(wide), epochs=1)).path
    files = read_adapter(path)
    model = MultiTaskModel(str(narrow))
    files.task["backbone"]["fingerprint"] = model.fingerprint  # get past the fingerprint check
    mismatch = r"LoRA for distilbert\.\S+ is 48x\d+ but the base layer is 32x\d+"
    with pytest.raises(AdapterFileError, match=mismatch):
        model.load(files)
    assert not model.tasks


def test_another_base_fingerprint(adapter, tmp_path):
    other = make_tiny(tmp_path / "other", "distilbert", seed=1)
    assert_refused(MultiTaskModel(str(other)), adapter, "trained on base")


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "adapter"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(target) as tmp:
        (tmp / "f").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "f").write_text("v2")
            raise RuntimeError("crash")
    assert (target / "f").read_text() == "v1"


def test_overwrite_never_leaves_the_directory_missing_for_a_reader(tmp_path):
    """A server reads the store while an admin replaces an adapter: on Linux the new version
    takes the name in one exchange, so a reader sees v-old or v-new, never no directory."""
    import threading

    from adapters_kit.files import exchange

    probe_a, probe_b = tmp_path / "a", tmp_path / "b"
    probe_a.mkdir()
    probe_b.mkdir()
    if not exchange(probe_a, probe_b):
        pytest.skip("this filesystem cannot exchange two directories atomically")
    target = tmp_path / "adapter"
    with atomic_directory(target) as tmp:
        (tmp / "f").write_text("0")
    stop, seen = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append((target / "f").read_text())
            except FileNotFoundError:
                seen.append(None)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 200):
            with atomic_directory(target, overwrite=True) as tmp:
                (tmp / "f").write_text(str(i))
    finally:
        stop.set()
        reader.join()
    assert None not in seen and len(set(seen)) > 1
    assert (target / "f").read_text() == "199"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "adapter", "b"]
