"""``python -m vpr_edge.cli`` runs the ``vpr-edge`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
