"""What `python -m bench run` refuses unless the user opts in: the ways a Hydra
command line or config folder can run arbitrary code.

Hydra instantiates ``hydra.callbacks.*._target_``, the launcher and sweeper named
by ``hydra.launcher._target_`` / ``hydra.sweeper._target_``, and logging handlers
(``()`` factories and ``class:`` in ``hydra.job_logging`` / ``hydra.hydra_logging``);
``--experimental-rerun FILE`` unpickles FILE. On your own command line that is
your own power, but a config folder (``--config-dir``, an experiment YAML) or a
file from someone else must not run code: these are refused with one line unless
``--allow-code`` is given or ``BENCH_ALLOW_CODE=1`` is set. Hydra's own launchers
and sweepers (``hydra_plugins.*``, ``hydra._internal.*``) and the standard
``logging.*`` handlers are allowed. Stores are data only: JSON, CSV, Parquet, and
models read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os

from .config import ConfigError

SAFE_TARGETS = ("hydra_plugins.", "hydra._internal.")
HINT = "pass --allow-code (or set BENCH_ALLOW_CODE=1) if you trust it"


def allowed(flags: list[str]) -> bool:
    return "--allow-code" in flags or os.environ.get("BENCH_ALLOW_CODE", "") == "1"


def check_flags_and_overrides(flags: list[str], overrides: list[str]) -> None:
    if "--experimental-rerun" in flags:
        raise ConfigError(f"--experimental-rerun unpickles its file, which can run any code; "
                          f"{HINT}")
    for o in overrides:
        key = o.lstrip("+~").partition("=")[0]
        if key == "hydra.callbacks" or key.startswith("hydra.callbacks."):
            raise ConfigError(f"{key}: Hydra callbacks run code; {HINT}")


def _logging_code(node, where: str) -> str | None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "()":
                return f"{where}: a '()' factory"
            if k == "class" and isinstance(v, str) and not v.startswith("logging."):
                return f"{where}.class={v}"
            if (found := _logging_code(v, f"{where}.{k}")) is not None:
                return found
    return None


def check_hydra_config(hydra: dict) -> None:
    """Refuse code that the composed ``hydra`` node would run (from any config file)."""
    if hydra.get("callbacks"):
        names = ", ".join(sorted(hydra["callbacks"]))
        raise ConfigError(f"hydra.callbacks ({names}) would run code; {HINT}")
    for part in ("launcher", "sweeper"):
        target = str((hydra.get(part) or {}).get("_target_", ""))
        if target and not target.startswith(SAFE_TARGETS):
            raise ConfigError(f"hydra.{part}._target_={target} is not one of Hydra's own "
                              f"plugins; {HINT}")
    for part in ("job_logging", "hydra_logging"):
        if (found := _logging_code(hydra.get(part), f"hydra.{part}")) is not None:
            raise ConfigError(f"{found} would run code; {HINT}")
