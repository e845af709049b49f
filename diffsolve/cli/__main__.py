"""``python -m diffsolve.cli ...`` runs the command line (as the ``diffsolve`` script does)."""

import sys

from . import main

sys.exit(main())
