"""The legacy era (2024-11-05 ... 2025-11-25): sessions, initialize, POST/GET/DELETE, resumability.

`endpoint` (HTTP handlers, session lifecycle) > `session` (one session) > `dispatcher` (the SDK
`Dispatcher`, requests in flight) > `streams` (outbound streams); `responses` holds the raw ASGI writes.
Their state tables are in `_core` (`live_session`, `exchanges`, `outbound`)."""
