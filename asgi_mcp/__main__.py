"""`python -m asgi_mcp ...` runs the `asgi-mcp` command."""

from ._serving.cli import main

raise SystemExit(main())
