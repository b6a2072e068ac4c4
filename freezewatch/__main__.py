"""``python -m freezewatch``: the same as the ``freezewatch`` command."""

import sys

from .cli import main

sys.exit(main())
