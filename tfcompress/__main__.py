"""``python -m tfcompress`` runs the command line."""

import sys

from tfcompress.cli import main

sys.exit(main())
