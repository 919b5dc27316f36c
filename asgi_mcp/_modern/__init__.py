"""The modern era (2026-07-28): one POST is one exchange, no session."""
