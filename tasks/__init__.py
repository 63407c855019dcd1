"""Tasks (models + objectives) and datasets. Every module here is imported, so
a task registered with ``@register("name")`` needs no other edit."""

import importlib
import pkgutil

from .base import TaskConfigError, build, get_class, names, register

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["TaskConfigError", "build", "get_class", "names", "register"]
