"""The Hydra application behind `python -m bench run`."""

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError
from .paths import CONF_DIR

log = logging.getLogger("bench")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> str:
    from .jobs import run

    try:
        return run(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as e:  # already checked up front; kept for direct Hydra use
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # disk full, a folder gone or read-only: one line, not a traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e} [Errno {e.errno}]; every row written so far "
              "is kept", file=sys.stderr)
        sys.exit(1)
