"""A module that fails while it is imported (``tiercel broken_on_import:app``)."""

raise RuntimeError("broken on purpose")
