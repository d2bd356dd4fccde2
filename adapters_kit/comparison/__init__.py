"""`adapters-kit compare`: the backbone and precision trade-off, measured on the user's own task
and machine.

    from adapters_kit import compare
    result = compare("sst2", max_train_examples=8000)   # both embedded backbones x precisions
    print(result.table()); print(result.recommendation)  # also compare.json and compare.png

`grid` decides the combinations and why any cannot run here; `run` trains and measures them;
`measure` holds the measurements, `report` the table, the words and the last run's copy, and
`plot` the PNG.
"""

from .grid import DEFAULT_BUDGET_S, PRECISIONS
from .report import last_comparison, last_run_path, summary
from .run import FIGURES, Comparison, compare

__all__ = ["DEFAULT_BUDGET_S", "FIGURES", "PRECISIONS", "Comparison", "compare", "last_comparison",
           "last_run_path", "summary"]
