"""``python -m convotel.cli``: the ``convotel`` command."""

import sys

from convotel.cli import main

if __name__ == "__main__":
    sys.exit(main())
