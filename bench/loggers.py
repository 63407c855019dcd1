"""Experiment trackers beside the results store (``logger=none|tensorboard|wandb``,
conf/logger/): every metric a run records, at its evaluation step, mirrored to
TensorBoard event files or a Weights & Biases run (offline by default). The store
stays the record; a tracker that fails to start is a one-line error before
training, and one that fails while logging never stops the run."""

from __future__ import annotations

import json
import logging
import math

from .config import ConfigError

log = logging.getLogger("bench")
NAMES = ("none", "tensorboard", "wandb")


def check(cfg: dict) -> None:
    """One-line ConfigError for an unknown tracker or a missing package."""
    node = cfg.get("logger") or {"name": "none"}
    name = node.get("name", "none")
    if name not in NAMES:
        raise ConfigError(f"unknown logger {name!r}; allowed: {', '.join(NAMES)}")
    try:
        if name == "tensorboard":
            import tensorboard  # noqa: F401  (torch's SummaryWriter needs it)
        elif name == "wandb":
            import wandb  # noqa: F401
    except ImportError:
        raise ConfigError(f"logger={name} needs its package: pip install "
                          f"\"discrete-grad-bench[{name}]\" (or pip install {name})") from None
    if name == "wandb" and node.get("mode", "offline") not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode must be offline, online or disabled, got "
                          f"{node.get('mode')!r}")


def _flat(node, prefix="") -> dict:
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
    else:
        key = prefix[:-1]
        out[key] = (node if isinstance(node, (int, float, str, bool)) and node is not None
                    else json.dumps(node, default=str))
    return out


def _finite(metrics: dict) -> dict:
    """Only finite numbers: a tracker never shows NaN/inf as a plotted value."""
    out = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k] = f
    return out


class Tracker:
    """No tracker (``logger=none``); the interface the others share."""

    def log(self, step: int, metrics: dict) -> None:
        pass

    def close(self, status: str, final: dict | None = None) -> None:
        pass


class TensorBoard(Tracker):
    def __init__(self, node: dict, run_id: str, label: str, cfg: dict):
        from pathlib import Path

        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(str(node.get("dir") or "tensorboard")) / run_id
        self.writer = SummaryWriter(log_dir=str(self.dir))
        self.writer.add_text("run", f"{label} (run {run_id})", 0)
        self.hparams = {k: v for k, v in _flat(cfg).items()
                        if not k.startswith(("hydra.", "logger.", "results_dir", "data_dir"))}
        self.last: dict = {}

    def log(self, step: int, metrics: dict) -> None:
        for k, v in _finite(metrics).items():
            self.writer.add_scalar(k, v, step)
            self.last[k] = v
        self.writer.flush()

    def close(self, status: str, final: dict | None = None) -> None:
        final = _finite(final or self.last)
        hp_metrics = {f"final/{k}": v for k, v in final.items()
                      if k in ("test_neg_elbo", "test_nll", "train_neg_elbo", "wall_s")}
        self.writer.add_hparams({**self.hparams, "status": status}, hp_metrics or
                                {"final/none": 0.0}, run_name=".")
        self.writer.close()


class Wandb(Tracker):
    def __init__(self, node: dict, run_id: str, label: str, cfg: dict):
        from pathlib import Path

        import wandb

        d = Path(str(node.get("dir") or "wandb"))
        d.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=node.get("project") or "discrete-grad-bench",
                              entity=node.get("entity"), mode=node.get("mode", "offline"),
                              dir=str(d), name=label, id=run_id.replace(":", "-"),
                              config={k: v for k, v in cfg.items() if k != "hydra"},
                              reinit="finish_previous")

    def log(self, step: int, metrics: dict) -> None:
        self.run.log(_finite(metrics), step=step)

    def close(self, status: str, final: dict | None = None) -> None:
        self.run.summary["status"] = status
        self.run.finish(exit_code=0 if status == "complete" else 1)


def make(cfg: dict, run_id: str, label: str) -> Tracker:
    node = cfg.get("logger") or {"name": "none"}
    name = node.get("name", "none")
    if name == "none":
        return Tracker()
    cls = {"tensorboard": TensorBoard, "wandb": Wandb}[name]
    return _Guarded(cls(node, run_id, label, cfg), name)


class _Guarded(Tracker):
    """A tracker whose failures are logged once and never stop training."""

    def __init__(self, inner: Tracker, name: str):
        self.inner, self.name, self.failed = inner, name, False

    def _call(self, fn, *args):
        if self.failed:
            return
        try:
            fn(*args)
        except Exception as e:  # a tracker is a mirror: the store has the rows
            self.failed = True
            log.warning(f"logger={self.name} stopped logging ({type(e).__name__}: {e}); "
                        f"the results store is unaffected")

    def log(self, step: int, metrics: dict) -> None:
        self._call(self.inner.log, step, metrics)

    def close(self, status: str, final: dict | None = None) -> None:
        self._call(self.inner.close, status, final)
