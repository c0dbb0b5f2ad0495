"""HTTP: the pure-ASGI app (no framework on the hot path), its routes, the streaming response."""
