"""The nats backend."""
