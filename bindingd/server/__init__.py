"""The gRPC side: listeners, lifecycle, auth, and one module per service (gRPC ↔ domain)."""
