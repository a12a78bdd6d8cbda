"""``python -m tsgu_core.cli`` runs the ``tsgu`` command line."""

import sys

from tsgu_core.cli import main

sys.exit(main())
