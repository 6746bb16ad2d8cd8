"""`python -m snoopbus.app ...`: the `snoopbus` command (how `up` starts its children)."""

import sys

from snoopbus.app.main import main

sys.exit(main())
