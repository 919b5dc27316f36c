"""The app edge: `McpApp` (ASGI entry, error boundary), its frozen `AppConfig`, the `Runtime` of a run,
edge authentication, the side routes, and era negotiation."""
