"""One-off studies, each a `python -m bench.studies.NAME` entry (and a `python -m bench NAME` command)."""
