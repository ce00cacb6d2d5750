"""``python -m gateway``: see `gateway.cli`."""

from gateway.cli import main

raise SystemExit(main())
