"""Adapters: each moves bytes and time between an OS API and the engine."""
