"""The embedded local backend: SQLite and files under the project's .bindingd/state."""
