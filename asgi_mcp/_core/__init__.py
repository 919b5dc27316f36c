"""The sans-IO protocol core: HTTP header rules, JSON-RPC, SSE framing, state tables, the session
table, Host/Origin and CORS policy, errors. No anyio, no clock, no sockets: time and ids come in as
arguments, and what to do goes out as return values."""
