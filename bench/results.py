"""The results store's public import: ``from bench.results import Store, load, COLUMNS``
(the code lives in bench/store/)."""

from .store import COLUMNS, DamagedRunError, Run, Store, atomic_write, load

__all__ = ["COLUMNS", "DamagedRunError", "Run", "Store", "atomic_write", "load"]
