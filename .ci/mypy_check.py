"""mypy against a recorded baseline: fails on any error that is not in `.ci/mypy-baseline.txt`.

The package predates its type checks, so the errors it had when mypy joined CI are listed in the
baseline (file, error code and message; line numbers are left out so that edits elsewhere in a
file do not move them). New code is held to no new errors; fixing one shrinks the baseline:

    python .ci/mypy_check.py            # check (what .ci/run does)
    python .ci/mypy_check.py --update   # rewrite the baseline after fixing errors
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / ".ci" / "mypy-baseline.txt"
ERROR = re.compile(r"^(?P<file>[^:]+):\d+(?::\d+)?: error: (?P<message>.*)$")


def current() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"mypy did not run:\n{out.stdout}{out.stderr}")
    return sorted(f"{m['file']}: {m['message']}" for line in out.stdout.splitlines()
                  if (m := ERROR.match(line)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help="write the current errors as the baseline")
    args = ap.parse_args()
    errors = current()
    if args.update:
        BASELINE.write_text("".join(e + "\n" for e in errors))
        print(f"mypy baseline: {len(errors)} errors written to {BASELINE.relative_to(ROOT)}")
        return 0
    known = collections.Counter(BASELINE.read_text().splitlines() if BASELINE.exists() else [])
    new = collections.Counter(errors) - known
    fixed = sum((known - collections.Counter(errors)).values())
    print(f"mypy: {len(errors)} errors, {sum(known.values())} in the baseline, {sum(new.values())} new, "
          f"{fixed} fixed since (run with --update to shrink the baseline)")
    for e in sorted(new.elements()):
        print(f"  new: {e}")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
