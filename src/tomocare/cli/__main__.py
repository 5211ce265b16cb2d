"""``python -m tomocare.cli``: the command line."""

import sys

from tomocare.cli import main

sys.exit(main())
