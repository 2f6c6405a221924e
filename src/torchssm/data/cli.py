"""``torchssm tasks``: list the registered tasks (name and one-line description)."""

from __future__ import annotations

from torchssm.data.registry import list_tasks


def _run_tasks(args) -> int:
    tasks = list_tasks()
    width = max((len(name) for name in tasks), default=0)
    for name, description in tasks.items():
        print(f"{name:<{width}}  {description}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("tasks", help="list the registered tasks")
    parser.set_defaults(func=_run_tasks)
