"""A module whose own import of a missing package fails."""

import tiercel_test_package_that_does_not_exist  # noqa: F401

app = None
