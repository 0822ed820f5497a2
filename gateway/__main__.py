"""``python -m gateway``: the same as ``carewatch gateway``."""

import sys

from app.cli import main

sys.exit(main(["gateway", *sys.argv[1:]]))
