"""The gateway: remote bindings with credentials kept server-side (issue 14)."""
