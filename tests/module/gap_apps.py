"""Apps for tests/module/test_module_gaps.py, run in real app processes by `tiercel module`."""

from __future__ import annotations

from typing import Any

HINT = (b"link", b"</style.css>; rel=preload; as=style")


async def early_hints(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 103 Early Hints with a Link header, then 200 with the body "final"."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.informational", "status": 103, "headers": [HINT]})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": b"final"})
