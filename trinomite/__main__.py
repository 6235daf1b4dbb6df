"""``python -m trinomite``: the same as the ``trinomite`` command (see ``cli``).

Theory of operation
-------------------
All logic lives in ``trinomite.cli.main``, which returns the exit code.
"""

from __future__ import annotations

import sys

from trinomite.cli import main

sys.exit(main())
