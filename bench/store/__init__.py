"""The results store (bench/store/): file formats (files), writing runs (write),
checking them (verify), reading them (read), compacting finished runs (compact),
one trainer per config (lock), and `python -m bench store` (cli).

``from bench.results import Store, load, COLUMNS`` stays the public import.
"""

from .files import COLUMNS, atomic_write
from .read import DamagedRunError, load
from .write import Run, Store

__all__ = ["COLUMNS", "DamagedRunError", "Run", "Store", "atomic_write", "load"]
