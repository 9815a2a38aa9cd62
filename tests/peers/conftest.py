"""Fixtures for the real-peer tests (they live in ``peers_helpers``)."""

from peers_helpers import peer_server

__all__ = ["peer_server"]
