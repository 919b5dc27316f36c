"""The app edge: `McpApp`, its configuration and runtime, routes, and era negotiation."""
