"""What runs on top of the engine: the command, hosting, app loading, samples."""

from .hosting import Server

__all__ = ["Server"]
