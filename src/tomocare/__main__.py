"""``python -m tomocare``: the command line."""

import sys

from tomocare.cli import main

sys.exit(main())
