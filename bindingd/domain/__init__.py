"""Binding rules and contract types: what every provider of a type must honour. No I/O."""
