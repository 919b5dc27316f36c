"""Bearer authentication: header parsing and challenges (RFC 6750), resource metadata (RFC 9728),
the principal a request runs as, and the token verifiers (static, JWT/JWKS, introspection)."""
