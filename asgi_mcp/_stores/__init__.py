"""Stores: implementations of the ports (`asgi_mcp._ports`) that keep state outside this process.

Each backend is a subpackage that alone imports its client library (an optional extra), so the
package imports without it: `redis` needs `asgi-mcp[redis]` (coredis).
"""
