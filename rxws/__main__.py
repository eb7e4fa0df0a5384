"""``python -m rxws``: the same as the ``rxws`` command."""

import sys

from .cli import main

sys.exit(main())
