"""Tasks and data sets: a registry of builders returning TaskData (info + datasets)."""

from torchssm.data.registry import TaskData, TaskInfo, build_task, declare_task_module, list_tasks, register_task

__all__ = ["TaskData", "TaskInfo", "build_task", "declare_task_module", "list_tasks", "register_task"]
