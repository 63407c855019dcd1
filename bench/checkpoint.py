"""Checkpoints of a run in progress, so a long run killed mid-way resumes where it
was instead of starting over.

A checkpoint holds everything the rest of the run depends on: the model, the
trainer's optimizer (and any other object of it with a ``state_dict``) and its
position in the epoch's randperm, the estimator's state (``Estimator.state_dict``:
baselines, control variates; and the per-layer copies an SBN keeps), the RNG
states (torch CPU, and CUDA where present), the step, the training objective
summed since the last evaluation, and the clock. Resumed from it, a run writes
exactly the rows the uninterrupted run would have written (tests/test_checkpoint.py
kills a real ``python -m bench run`` with SIGKILL and compares every value).

Files, in the run's directory (beside its rows, never committed: .gitignore):

    checkpoint.pt        the latest; checkpoint-prev.pt  the one before

Each is written to a temporary name, fsynced and renamed; it ends with a magic tag
and the SHA-256 of its body, so a truncated or damaged file is detected and named
(with one warning line) and the previous checkpoint, or a fresh start, is used
instead -- it is never loaded as data. Both are deleted when the run ends
(complete or diverged).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("bench")

FORMAT = 1
MAGIC = b"BENCH-CKPT-SHA256"
LATEST, PREVIOUS = "checkpoint.pt", "checkpoint-prev.pt"
# attributes of the trainer saved elsewhere, or rebuilt from the config
_TRAINER_SKIP = ("task", "est", "data", "device")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file."""


# --- files --------------------------------------------------------------------

def write(run_dir: Path, state: dict) -> Path:
    """Write ``state`` as the run's latest checkpoint (the old one becomes previous)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    body = buf.getvalue()
    tmp = run_dir / ".tmp-checkpoint.pt"
    with open(tmp, "wb") as fh:
        fh.write(body + MAGIC + hashlib.sha256(body).digest())
        fh.flush()
        os.fsync(fh.fileno())
    latest = run_dir / LATEST
    if latest.exists():
        os.replace(latest, run_dir / PREVIOUS)
    os.replace(tmp, latest)
    return latest


def read(path: Path, map_location=None) -> dict:
    """The state in a checkpoint file; CheckpointError if it is damaged."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror}") from None
    tail = len(MAGIC) + 32
    body, tag, digest = data[:-tail], data[-tail:-32], data[-32:]
    if len(data) < tail or tag != MAGIC or hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is damaged (truncated or altered: "
                              f"its checksum does not match)")
    try:
        state = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except Exception as e:  # a file that passed the checksum but is not ours
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a format-{FORMAT} run checkpoint")
    return state


def remove(run_dir: Path) -> None:
    for name in (LATEST, PREVIOUS):
        (run_dir / name).unlink(missing_ok=True)


def usable(run_dir: Path, config_hash: str, map_location=None) -> dict | None:
    """The newest usable checkpoint of a run directory (latest, else previous), or
    None; a damaged or foreign one is named in one warning line and passed over."""
    for name in (LATEST, PREVIOUS):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            state = read(path, map_location)
        except CheckpointError as e:
            log.warning(f"{e}; not used")
            continue
        if state.get("config_hash") != config_hash:
            log.warning(f"checkpoint {path} belongs to config {state.get('config_hash')}, "
                        f"not {config_hash}; not used")
            continue
        return state
    return None


@dataclass
class Resumable:
    run_dir: Path
    run_id: str
    meta: dict
    state: dict

    @property
    def step(self) -> int:
        return int(self.state["step"])


def find(runs_dir: Path, config_hash: str, map_location=None) -> Resumable | None:
    """The unfinished run of this config with the furthest usable checkpoint."""
    best = None
    for run_dir in sorted((Path(runs_dir) / config_hash).glob("*/")):
        if (run_dir / "status.json").exists() or not any(
                (run_dir / n).exists() for n in (LATEST, PREVIOUS)):
            continue
        state = usable(run_dir, config_hash, map_location)
        if state is None:
            continue
        try:
            meta = json.loads((run_dir / "meta.json").read_text())
        except (OSError, ValueError):
            log.warning(f"{run_dir / 'meta.json'} is missing or damaged; its checkpoint "
                        f"is not used")
            continue
        if best is None or int(state["step"]) > best.step:
            best = Resumable(run_dir, run_dir.name, meta, state)
    return best


def recorded_steps(run_dir: Path) -> set[int]:
    """Steps whose rows the run has already written (``rows-<step>.csv``)."""
    out = set()
    for f in run_dir.glob("rows-*.csv"):
        try:
            out.add(int(f.stem.split("-", 1)[1]))
        except ValueError:
            pass
    return out


# --- what a run's state is ----------------------------------------------------

def _estimators(task, est) -> list:
    """The run's estimator and any copies the task keeps (one per SBN layer)."""
    layers = getattr(task, "layer_estimators", None)
    return list(layers(est)) if callable(layers) else [est]


def capture(step: int, config_hash: str, task, est, trainer, clock, obj_sum,
            obj_count: int) -> dict:
    trainer_state = {}
    for k, v in vars(trainer).items():
        if k in _TRAINER_SKIP:
            continue
        if hasattr(v, "state_dict") and hasattr(v, "load_state_dict"):
            trainer_state[k] = ("state_dict", v.state_dict())
        elif isinstance(v, torch.Tensor):
            trainer_state[k] = ("tensor", v.detach().clone())
        elif isinstance(v, (int, float, bool, str, type(None))):
            trainer_state[k] = ("value", v)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"format": FORMAT, "config_hash": config_hash, "step": int(step),
            "model": task.state_dict() if isinstance(task, torch.nn.Module) else {},
            "estimators": [e.state_dict() for e in _estimators(task, est)],
            "trainer": trainer_state, "rng": rng,
            "obj_sum": obj_sum.detach().clone(), "obj_count": int(obj_count),
            "clock": {"times": list(clock.times), "train_time": float(clock.train_time),
                      "wall": float(clock.wall())}}


def restore(state: dict, task, est, trainer, clock) -> tuple[torch.Tensor, int]:
    """Put a run back as it was at ``state['step']``; returns (obj_sum, obj_count)."""
    if isinstance(task, torch.nn.Module):
        task.load_state_dict(state["model"])
    device = trainer.device
    latents = tuple(task.latent_shape)
    est.load_state_dict(state["estimators"][0], latents=latents, device=device)
    ests = _estimators(task, est)  # copies made now follow the loaded estimator
    if len(ests) != len(state["estimators"]):
        raise CheckpointError(f"checkpoint has {len(state['estimators'])} estimator states, "
                              f"the task uses {len(ests)}")
    for e, s in zip(ests[1:], state["estimators"][1:], strict=True):
        e.load_state_dict(s, latents=latents, device=device)
    for k, (kind, v) in state["trainer"].items():
        if kind == "state_dict":
            getattr(trainer, k).load_state_dict(v)
        else:
            setattr(trainer, k, v)
    clock.times[:] = state["clock"]["times"]
    clock.train_time = state["clock"]["train_time"]
    clock.t_start -= state["clock"]["wall"]  # wall_s counts the time before the restart
    # last: building state above (lazy control variates) may draw random numbers
    torch.set_rng_state(state["rng"]["cpu"])
    if "cuda" in state["rng"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["obj_sum"], int(state["obj_count"])


# --- SIGTERM (preemption) -------------------------------------------------------

class Preempted(SystemExit):
    """Raised after a checkpoint was written on SIGTERM: the process exits with 143."""

    def __init__(self):
        super().__init__(128 + signal.SIGTERM)


class SigtermFlag:
    """While active, SIGTERM sets ``requested`` instead of killing the process, so the
    training loop can write a checkpoint after the current step and exit."""

    def __init__(self, active: bool = True):
        self.active, self.requested = active, False
        self._old = None

    def __enter__(self):
        if not self.active:
            return self
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave SIGTERM as it is
            self._old = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False
