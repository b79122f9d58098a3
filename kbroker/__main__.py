"""``python -m kbroker``: the same as the ``kbroker`` command."""

import sys

from kbroker.cli import main

if __name__ == "__main__":
    sys.exit(main())
