"""``python -m notifier``: the same as ``carewatch notifier``."""

import sys

from app.cli import main

sys.exit(main(["notifier", *sys.argv[1:]]))
