"""``python -m transports`` runs ``broker`` (``serve`` when no command is given)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main(sys.argv[1:] or ["serve"]))
