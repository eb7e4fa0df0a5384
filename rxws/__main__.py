"""``python -m rxws``: the same as the ``rxws`` command."""

import sys

from ._launch import main

sys.exit(main())
