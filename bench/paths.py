"""Where the repository and its Hydra configs are: conf/ at the top of a source
checkout, or bench/conf/ inside an installed wheel (setup.py copies it there)."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
_SOURCE_CONF = REPO_DIR / "conf"
_PACKAGED_CONF = PACKAGE_DIR / "conf"
# a checkout's conf/ wins (it is what the user edits); an installed wheel has only its copy
CONF_DIR = (_SOURCE_CONF if (_SOURCE_CONF / "config.yaml").is_file()
            or not (_PACKAGED_CONF / "config.yaml").is_file() else _PACKAGED_CONF)
