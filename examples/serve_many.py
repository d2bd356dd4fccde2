"""Many task adapters on one base model: load every adapter in a folder, answer a mixed batch.

    python examples/serve_many.py adapters-demo

Run `adapters-kit demo` first (it writes adapters-demo/), or point at any folder of adapters
trained on the same backbone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from adapters_kit import AdapterFileError, MultiTaskModel, read_adapter


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "adapters-demo")
    dirs = sorted(p for p in root.iterdir() if (p / "adapter_config.json").exists())
    if not dirs:
        sys.exit(f"no adapters in {root}; run `adapters-kit demo` first")
    model = MultiTaskModel(read_adapter(dirs[0]).task["backbone"]["name"])
    for d in dirs:
        try:
            print("loaded", model.load(d))
        except AdapterFileError as e:  # a bad file is refused; the others keep serving
            print("refused:", e)
    text = "My card was charged but the order never shipped, I need this fixed today"
    batch = [(task, text) for task in model.tasks]
    for (task, _), pred in zip(batch, model.predict_mixed(batch)):
        print(f"{task:<20} {pred['label']}")


if __name__ == "__main__":
    main()
