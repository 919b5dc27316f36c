"""Serving: running an app in-process (hypercorn), the one-call multi-tenant server, the CLI and the demo."""
