"""A job of `python -m bench run`: one config, trained as one seed (bench.train) or
as several seeds stacked in one process (``seeds=[...]``, bench.stacked), and
validated as such before anything trains."""

from __future__ import annotations

from . import config, loggers, stacked, train


def validate(cfg: dict) -> None:
    """Raise a one-line ConfigError for anything wrong with the job."""
    task = config.validate(cfg)
    loggers.check(cfg)
    if cfg.get("seeds") is not None:
        stacked.check_stackable(cfg, task)


def run(cfg: dict) -> str | dict:
    """Train the job; its status, or {seed: status} for ``seeds=[...]``."""
    if cfg.get("seeds") is not None:
        return stacked.run(cfg)
    return train.run(cfg)
