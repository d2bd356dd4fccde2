"""Tasks: what a task is (`spec`), the registry and its TOML cards (`registry`), the task kinds
(`kinds/`: everything that differs by kind) and reading task data (`reading`).

Inside the package the order is `registry` > `spec` > `kinds` > `reading`: each imports only
those after it (pyproject.toml's import contracts check it)."""

from .registry import (
    bundled_cards_dir,
    cards_dirs,
    get_task,
    list_tasks,
    load_card,
    load_cards,
    register_task,
)
from .spec import (
    FORMATS,
    SERVED_NAME_RULE,
    TASK_NAME_RULE,
    TaskSpec,
    is_served_name,
    is_task_name,
)

__all__ = ["FORMATS", "SERVED_NAME_RULE", "TASK_NAME_RULE", "TaskSpec", "bundled_cards_dir", "cards_dirs",
           "get_task", "is_served_name", "is_task_name", "list_tasks", "load_card", "load_cards",
           "register_task"]
