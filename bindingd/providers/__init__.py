"""Providers: domain ↔ backend. They know nothing about gRPC; services call them."""
