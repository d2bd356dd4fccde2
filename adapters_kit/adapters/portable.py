"""Adapters that travel: the base they name, resolved on any machine. (Loading or saving an
adapter by local path or store URL is the door's: `door.load_adapter`, `door.save_adapter_files`.)

`base_model_name_or_path` in adapter_config.json is the backbone's stable name
(`store.base_name`): the name of an embedded backbone (`embedded-distilbert`), or the hub id of
a hub backbone. Only a backbone given as a local folder keeps this machine's base folder there
(no name would resolve elsewhere). Plain peft needs the base *folder* with the task's zero output layer
(`Backbone.head_dir`); one call makes it on any machine, in that machine's cache:

    base = adapters_kit.resolve_base("adapters/sst2")     # an adapter directory, or a name
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    model = PeftModel.from_pretrained(model, "adapters/sst2")
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..backbones import HEAD_OUT, Backbone, base_dir
from ..errors import AdapterFileError
from ..tasks.kinds import kind_of
from . import meta
from .store import CONFIG, TASK


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
