"""Fixtures for the https endpoint tests (they live in ``tls_helpers``)."""

from tls_helpers import cert_dir, pki, serve

__all__ = ["cert_dir", "pki", "serve"]
