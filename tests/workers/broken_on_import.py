"""A module whose import fails, as a broken deployment would."""

raise RuntimeError("broken on purpose")
