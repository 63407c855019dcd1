"""The benchmark runner: CLI, Hydra app, training loop, metrics, results store."""

__version__ = "0.1.0"
