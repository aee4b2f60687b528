"""``python -m backchannel``: the same as the ``backchannel`` command."""

import sys

from backchannel.cli import main

sys.exit(main())
