"""The rabbitmq backend."""
