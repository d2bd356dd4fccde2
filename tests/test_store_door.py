"""The one door to stores: `open_store` gives a LocalStore for a path and a RemoteStore for a URL
(a real S3 API: moto's server on loopback), both satisfy the `AdapterStore` protocol, a bad
location is refused naming it and the fix, both stores publish only the version the caller
checked, and the CLI's predict and eval read an adapter from an s3:// store URL."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from helpers import sentiment_rows, write_tsv
from moto_s3 import moto_s3, storage_options

from adapters_kit import AdapterFileError, AdapterStore, LocalStore, RemoteStore, open_store
from adapters_kit.adapters import save_adapter_files, store_location
from adapters_kit.adapters.store import TASK, read_adapter

TEXTS = ["the film was great lovely", "a plot was dull boring"]


@pytest.fixture(scope="module")
def s3():
    with moto_s3("doors") as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_distilbert) -> dict[str, Path]:
    from test_remote_store import make_adapter

    root = tmp_path_factory.mktemp("door-adapters")
    return {"a1": make_adapter(tiny_distilbert, root, "alpha", 1),
            "a2": make_adapter(tiny_distilbert, root, "alpha", 2)}


def remote(s3: str, tmp_path: Path) -> RemoteStore:
    store = open_store(f"s3://doors/p{time.time_ns()}", storage_options=storage_options(s3),
                       cache_dir=tmp_path / "cache")
    assert type(store) is RemoteStore
    return store


def test_a_path_opens_a_local_store_and_a_url_a_remote_one(s3, adapters, tmp_path):
    local = open_store(tmp_path / "folder")
    also = open_store(str(tmp_path / "folder"))
    assert type(local) is LocalStore and type(also) is LocalStore and local.root == also.root
    far = remote(s3, tmp_path)
    for store in (local, far):
        assert isinstance(store, AdapterStore)  # the protocol every caller relies on
        assert open_store(store) is store  # an open store is its own door
        assert store.names() == [] and not store.has("alpha")
        digest = store.publish("alpha", adapters["a1"])
        assert digest == read_adapter(adapters["a1"]).digest
        assert store.names() == ["alpha"] and store.has("alpha") and store.exists("alpha")
        assert store.read("alpha").digest == digest
        assert store.info("alpha")["task"]["name"] == "alpha"
        assert store.publish("alpha", adapters["a2"]) == read_adapter(adapters["a2"]).digest
        assert store.read("alpha").digest == read_adapter(adapters["a2"]).digest
        store.recover()
    assert (local.remote, far.remote) == (False, True)
    # the remote store really is on S3: its objects are there, under the URL's prefix
    assert far.fs.exists(far._key("alpha", "CURRENT")) and not (tmp_path / "doors").exists()


def test_a_store_publishes_only_the_version_the_caller_checked(s3, adapters, tmp_path):
    """An install checks a source, then publishes it: a source changed in between is refused
    and the store keeps what it had (the folder's adapter, the object store's pointer)."""
    checked = read_adapter(adapters["a1"]).digest
    source = tmp_path / "source" / "alpha"
    shutil.copytree(adapters["a2"], source)  # by now the source holds another version
    for store in (open_store(tmp_path / "folder"), remote(s3, tmp_path)):
        store.publish("alpha", adapters["a1"])
        before = store.versions("alpha") if store.remote else None
        with pytest.raises(AdapterFileError, match="changed while it was being"):
            store.publish("alpha", source, digest=checked)
        assert store.read("alpha").digest == checked
        if store.remote:
            assert store.versions("alpha") == before  # nothing uploaded either
        else:
            assert [p.name for p in store.root.iterdir()] == ["alpha"]  # no staging left
        assert store.publish("alpha", source) == read_adapter(source).digest  # unchecked: here


def test_save_adapter_files_publishes_to_a_url(s3, adapters, tmp_path):
    store = remote(s3, tmp_path)
    files = read_adapter(adapters["a1"])
    url = f"{store.url}/alpha"
    assert save_adapter_files(files, url, storage_options=storage_options(s3),
                              cache_dir=tmp_path / "c2") == url
    assert store.read("alpha").digest == files.digest
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_adapter_files(files, url, storage_options=storage_options(s3))


@pytest.mark.parametrize(("location", "error", "named", "fix"), [
    ("nosuch://bucket/prefix", AdapterFileError, "nosuch://", "s3://bucket/prefix"),
    ("s3:/bucket/prefix", AdapterFileError, "s3:/bucket/prefix", "scheme://"),
    ("s3://", AdapterFileError, "'s3://'", "s3://bucket/prefix"),
    ("", AdapterFileError, "empty", "folder path"),
    (42, TypeError, "42", "folder path"),
])
def test_a_bad_location_is_refused_with_the_value_and_the_fix(location, error, named, fix):
    with pytest.raises(error) as refused:
        open_store(location)
    assert named in str(refused.value) and fix in str(refused.value)


def test_a_file_or_remote_options_are_no_folder_store(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(AdapterFileError, match=r"f\.txt is a file; a store is a folder"):
        open_store(tmp_path / "f.txt")
    with pytest.raises(TypeError, match=r"\['cache_dir'\] are a remote store's"):
        open_store(tmp_path, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="already open"):
        open_store(LocalStore(tmp_path), cache_dir=tmp_path)


def test_the_protocol_is_not_a_store_to_build(tmp_path):
    """`AdapterStore(path)` built a folder store before the door: now it says what to call."""
    with pytest.raises(TypeError, match=r"open_store\('adapters'\).*LocalStore\(path\)"):
        AdapterStore("adapters")
    assert not isinstance(tmp_path, AdapterStore) and not isinstance("s3://b/p", AdapterStore)


def test_store_location_is_the_one_place_a_url_is_told_from_a_path(tmp_path):
    assert store_location("s3://b/p") == "s3://b/p"
    assert store_location("file:///x") == "file:///x"
    assert store_location(str(tmp_path)) == tmp_path and store_location(tmp_path) == tmp_path
    assert store_location("adapters/s3:x") == Path("adapters/s3:x")  # a colon is no scheme


def test_cli_predict_and_eval_read_an_adapter_from_an_s3_store_url(s3, adapters, tmp_path,
                                                                   capsys):
    """`adapters-kit predict|eval STORE_URL/TASK` gives what the same adapter's folder gives."""
    from adapters_kit import cli

    store = remote(s3, tmp_path)
    digest = store.publish("alpha", adapters["a1"])
    url = f"{store.url}/alpha"
    data = write_tsv(tmp_path / "eval.tsv", ["text", "label"], sentiment_rows(24, seed=3))

    def run(*args) -> dict:
        assert cli.main([*args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    from_url = run("predict", url, *TEXTS)
    from_folder = run("predict", str(adapters["a1"]), *TEXTS)
    assert from_url["task"] == "alpha" and len(from_url["predictions"]) == 2
    assert from_url["predictions"] == from_folder["predictions"]
    scored = run("eval", url, "--data", str(data), "--no-baseline")
    assert scored["adapter"] == f"{url}/versions/{digest}"  # names the version key it read
    assert scored["examples"] == 24
    assert scored["metrics"] == run("eval", str(adapters["a1"]), "--data", str(data),
                                    "--no-baseline")["metrics"]
    # a task the store does not hold: refused naming the store and what it holds
    assert cli.main(["predict", f"{store.url}/nope", "x"]) == 2
    said = capsys.readouterr().err
    assert "no adapter 'nope'" in said and "alpha" in said


def test_an_adapter_in_a_local_store_keeps_its_files_whole(adapters, tmp_path):
    """A folder store's publish copies exactly the files checksums.json lists."""
    source = tmp_path / "src" / "alpha"
    shutil.copytree(adapters["a1"], source)
    (source / "notes.txt").write_text("not listed, not copied")
    store = LocalStore(tmp_path / "store")
    store.publish("alpha", source)
    listed = sorted([*json.loads((source / "checksums.json").read_text()), "checksums.json"])
    assert sorted(p.name for p in store.path("alpha").iterdir()) == listed
    assert (store.path("alpha") / TASK).read_bytes() == (source / TASK).read_bytes()
    with pytest.raises(AdapterFileError, match="is not an adapter name"):
        store.publish("../escape", source)
