"""`python -m asgi_lab ...`: see asgi_lab/cli.py."""

from .cli import main

raise SystemExit(main())
