"""``python -m jablate``: the ``jablate`` command line; with no arguments, the demo."""

import sys

from jablate.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["demo"]))
