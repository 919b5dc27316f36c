"""The legacy era (2024-11-05 ... 2025-11-25): sessions, initialize, POST/GET/DELETE, resumability."""
