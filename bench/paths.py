"""Where the repository and its Hydra configs are."""

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_DIR / "conf"
