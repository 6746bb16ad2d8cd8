"""`python -m snoopbus.consumers NAME ...`: `snoopbus consume` on its own."""

import sys

from .cli import main

sys.exit(main())
