"""Ports: the small protocols behind which state may live outside this process (tenant storage,
the session directory, resumability events, the message bus), with the in-memory implementations
that are the default."""
