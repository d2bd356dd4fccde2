"""Facts about the package's shape, checked: import circles, imports that climb a layer, and
module length. Prints one line per fact and exits 1 when any is broken.

The layers are pyproject.toml's import-linter `layers` contract (docs/ARCHITECTURE.md explains
them); imports under `if TYPE_CHECKING:` are left out, as they never run.

    python .ci/architecture.py [--max-lines 400]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grimp
import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "adapters_kit"


def cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    for i, names in enumerate(layers):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return None


def climbs(graph, layers: list[list[str]]) -> list[str]:
    """Imports from a module to one in a higher layer, or between two independent siblings."""
    bad = []
    for importer in sorted(graph.modules):
        low = layer_of(importer, layers)
        if low is None:
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            high = layer_of(imported, layers)
            if high is None:
                continue
            same_top = imported.split(".")[:2] == importer.split(".")[:2]
            if high < low or (high == low and not same_top):
                bad.append(f"{importer} -> {imported}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-lines", type=int, default=400, help="the longest a module may be")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c.get("type") == "layers" and "containers" not in c]
    layers = [[n.strip() for n in layer.replace(":", "|").split("|")] for layer in contract["layers"]]
    graph = grimp.build_graph(PACKAGE, exclude_type_checking_imports=True)
    circles = cycles(graph)
    up = climbs(graph, layers)
    modules = sorted((ROOT / PACKAGE).rglob("*.py"))
    long = [(len(p.read_text().splitlines()), p.relative_to(ROOT)) for p in modules]
    over = sorted([x for x in long if x[0] > args.max_lines], reverse=True)
    longest = max(long)
    unplaced = sorted({m.split(".")[1] for m in graph.modules
                       if m != PACKAGE and layer_of(m, layers) is None})
    print(f"modules: {len(graph.modules)}; longest: {longest[1]} ({longest[0]} lines)")
    print(f"import circles: {len(circles)}" + "".join(f"\n  {' <-> '.join(c)}" for c in circles))
    print(f"imports from a lower layer to a higher one (or across siblings): {len(up)}"
          + "".join(f"\n  {u}" for u in up))
    print(f"modules over {args.max_lines} lines: {len(over)}" + "".join(f"\n  {p} ({n})" for n, p in over))
    print(f"top-level modules in no layer: {len(unplaced)}" + "".join(f"\n  {u}" for u in unplaced))
    return 1 if circles or up or over or unplaced else 0


if __name__ == "__main__":
    sys.exit(main())
