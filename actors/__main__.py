"""``python -m actors``: the ``trio-lanes`` command line (see `actors._cli`)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
