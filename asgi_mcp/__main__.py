"""`python -m asgi_mcp ...` runs the `asgi-mcp` command."""

from ._cli import main

raise SystemExit(main())
