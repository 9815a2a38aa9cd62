"""The pairing token between ``tiercel module`` and the app process it starts.

The module hands the app process a random token (``TIERCEL_TOKEN``) and sends it with every
request it forwards in the ``X-Tiercel-Token`` header, as the ASP.NET Core Module does with
``MS-ASPNETCORE-TOKEN``. The app's engine refuses every request whose token is missing or wrong
with 400 before any app code runs, so nothing but the module can talk to the app even though
its loopback port is open to every local user. The header is removed before the app sees it.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from .errors import RemoteProtocolError

if TYPE_CHECKING:
    from .stream import HttpStream

TOKEN_HEADER = b"x-tiercel-token"


def check_pairing_token(stream: HttpStream, token: str) -> RemoteProtocolError | None:
    """Remove the token header from ``stream``; the error to answer with unless it matched."""
    values = [value for name, value in stream.headers if name == TOKEN_HEADER]
    if values:
        stream.headers = [(n, v) for n, v in stream.headers if n != TOKEN_HEADER]
    if len(values) == 1 and hmac.compare_digest(values[0], token.encode("ascii")):
        return None
    problem = "missing" if not values else "wrong"
    return RemoteProtocolError(
        f"pairing token {problem}: this port only serves the tiercel module that started it",
        400,
        "pairing_token",
    )
