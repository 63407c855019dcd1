"""The results store (bench/store/): writing runs (write), reading them (read).

``from bench.results import Store, load, COLUMNS`` stays the public import.
"""

from .read import load
from .write import COLUMNS, Run, Store, atomic_write

__all__ = ["COLUMNS", "Run", "Store", "atomic_write", "load"]
