"""Keys and authentication: key format, hashing, constant-time check; Bearer header -> principal."""
