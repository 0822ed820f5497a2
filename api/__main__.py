"""``python -m api``: the same as ``carewatch api``."""

import sys

from app.cli import main

sys.exit(main(["api", *sys.argv[1:]]))
