"""``python -m fakechv``: the fakechv command."""

import sys

from fakechv.cli import main

sys.exit(main())
