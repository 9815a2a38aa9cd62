"""Fixtures for the socket tests (they live in ``sockets_helpers``)."""

from sockets_helpers import spawn

__all__ = ["spawn"]
