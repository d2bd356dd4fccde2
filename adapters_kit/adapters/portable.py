"""Adapters that travel: a base name that resolves on any machine, and loading or saving an
adapter by local path or store URL.

`base_model_name_or_path` in adapter_config.json is the backbone's stable name: the name of an
embedded backbone (`embedded-distilbert`), or the hub id of a hub backbone. Only a backbone
given as a local folder keeps this machine's base folder there (no name would resolve
elsewhere). Plain peft needs the base *folder* with the task's zero output layer
(`Backbone.head_dir`); one call makes it on any machine, in that machine's cache:

    base = adapters_kit.resolve_base("adapters/sst2")     # an adapter directory, or a name
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    model = PeftModel.from_pretrained(model, "adapters/sst2")
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..backbones import EMBEDDED, HEAD_OUT, Backbone, base_dir
from ..errors import AdapterFileError
from ..tasks.kinds import kind_of
from . import meta
from .store import CHECKSUMS, CONFIG, TASK, AdapterFiles, read_adapter


def base_name(backbone: dict | None, local_folder: str | None) -> str | None:
    """The `base_model_name_or_path` an adapter of `backbone` (task.json's entry) records."""
    name = str((backbone or {}).get("name") or "")
    if not name:
        return local_folder
    if name in EMBEDDED:
        return name
    if Path(name).expanduser().exists():
        return local_folder  # a folder of this machine: nothing names it elsewhere
    return name  # a hub id


def resolve_base(source: str | os.PathLike, num_labels: int | None = None,
                 head: str | None = None) -> str:
    """A local base folder that plain peft loads the adapter onto, made in this machine's cache.

    `source`: an adapter directory (its task.json says the backbone, head and output count),
    or a base name (an embedded backbone, a hub id, a folder) with `num_labels` (and `head`,
    `qa_outputs` for extractive QA; default the classifier). A name without `num_labels` gives
    the backbone's own folder."""
    folder = Path(source).expanduser()
    if (folder / CONFIG).is_file():
        return _adapter_base(folder)
    if num_labels is None:
        return str(base_dir(str(source)))
    return str(Backbone.resolve(str(source)).head_dir(num_labels, head or HEAD_OUT))


def _adapter_base(folder: Path) -> str:
    try:
        config = json.loads((folder / CONFIG).read_bytes())
        task = json.loads((folder / TASK).read_bytes())
    except (OSError, ValueError) as e:
        raise AdapterFileError(f"adapter {folder} refused: its metadata cannot be read ({e}); "
                               "re-export the adapter") from None
    spec, problems = meta.task_problems(task)
    if spec is None or problems:
        raise AdapterFileError(f"adapter {folder} refused: {'; '.join(problems)}")
    recorded = config.get("base_model_name_or_path")
    if isinstance(recorded, str) and (Path(recorded) / "config.json").is_file():
        return recorded  # a base folder that exists here (the machine that trained it)
    name = recorded if isinstance(recorded, str) and recorded else task["backbone"]["name"]
    if (Path(name).is_absolute() or name.startswith(".")) and not Path(name).exists():
        name = task["backbone"]["name"]  # an older adapter's folder of another machine
    return str(Backbone.resolve(name).head_dir(spec.num_outputs, kind_of(spec).head))


def load_adapter(location: str | os.PathLike, max_weight_bytes: int | None = None,
                 **store_options) -> AdapterFiles:
    """An adapter, verified, from a local directory or a store URL (`s3://bucket/prefix/task`)."""
    from .remote import RemoteStore, is_url, split_url

    if is_url(str(location)) and isinstance(location, str):
        store_url, name = split_url(location)
        return RemoteStore(store_url, **store_options).read(name, max_weight_bytes)
    return read_adapter(location, max_weight_bytes=max_weight_bytes)


def save_adapter_files(files: AdapterFiles, location: str | os.PathLike, overwrite: bool = False,
                       **store_options) -> str:
    """Write an adapter's verified files to a local directory or publish them at a store URL;
    returns where they are (the URL, or the directory)."""
    from ..files import atomic_directory
    from .remote import RemoteStore, is_url, split_url

    source = files.path
    again = read_adapter(source)  # the folder still holds exactly what was verified
    if again.digest != files.digest:
        raise AdapterFileError(f"adapter {source} changed since it was read; read it again")
    if is_url(str(location)) and isinstance(location, str):
        store_url, name = split_url(location)
        store = RemoteStore(store_url, **store_options)
        if not overwrite and store.has(name):
            raise FileExistsError(f"{location} already exists; pass overwrite=True (CLI: "
                                  "--overwrite) to publish a new version")
        store.publish(name, source)
        return location
    listed = [*json.loads((source / CHECKSUMS).read_bytes()), CHECKSUMS]
    with atomic_directory(Path(location), overwrite=overwrite) as tmp:
        for name in listed:
            shutil.copyfile(source / name, tmp / name)
    return str(location)
