"""Per-bearer-token servers: the token registry and the servers it builds, retired and drained
through the session directory port, never through an era's own tables."""
