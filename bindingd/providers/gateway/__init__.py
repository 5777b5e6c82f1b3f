"""The developer side of a gateway: reaching it, and the session the daemon keeps with it."""
