"""Runs the self-check: ``python -m tpu_nb.selfcheck --help``."""

import sys

from .cli import main

sys.exit(main())
