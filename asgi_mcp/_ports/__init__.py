"""Ports: the small protocols behind which state may live outside this process, each with the
in-memory implementation that is the default: tenant storage (`tenant_store`), the legacy session
directory (`session_directory`), resumability events (`replay`, the SDK's `EventStore`) and the
cross-session message bus (`message_bus`). `fanout` is the bounded in-process delivery the in-memory
bus and tenant store share. Every implementation passes the same contract suite (tests/ports)."""
