"""Access log lines in the Common Log Format, with every request-controlled byte escaped."""

from __future__ import annotations

import time

from .headers import escape_for_log
from .stream import HttpStream

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def clf_time(wall_time: float) -> str:
    t = time.gmtime(wall_time)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def format_access_line(stream: HttpStream) -> str:
    """``host - - [date] "METHOD target HTTP/x" status bytes``"""
    remote = stream.remote_address
    host = remote[0] if remote else "-"
    request = f"{stream.method} {escape_for_log(stream.raw_target)} {stream.protocol}"
    size = str(stream.bytes_sent) if stream.bytes_sent else "-"
    return f'{host} - - [{clf_time(stream.wall_time)}] "{request}" {stream.status} {size}'
