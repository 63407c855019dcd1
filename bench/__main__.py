"""`python -m bench`: the command line (bench.cli)."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
