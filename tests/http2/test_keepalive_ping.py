"""HTTP/2 keep-alive PINGs (Kestrel's KeepAlivePingDelay / KeepAlivePingTimeout), on bytes."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
from tiercel.core import ConfigError, ServerContext, TransportInfo
from tiercel.core.http2 import Http2Limits, Http2Protocol


def connect(limits: Http2Limits) -> tuple[Http2Protocol, h2.connection.H2Connection]:
    server = Http2Protocol(ServerContext(wall_time=1e9), TransportInfo(), 0.0, limits)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server.receive_data(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send(), 0.0)
    return server, client


def test_no_ping_by_default():
    server, _ = connect(Http2Limits())
    assert server.next_deadline() == pytest.approx(130.0)  # just the keep-alive timeout


def test_silence_brings_a_ping_and_an_answer_keeps_the_connection():
    server, client = connect(Http2Limits(keep_alive_ping_delay=10, keep_alive_ping_timeout=5))
    assert server.next_deadline() == pytest.approx(10.0)
    server.on_timer(10.0)
    events = client.receive_data(server.data_to_send())
    assert any(isinstance(e, h2.events.PingReceived) for e in events)
    server.receive_data(client.data_to_send(), 11.0)  # h2 answers the PING by itself
    server.on_timer(16.0)
    assert not server.should_close
    assert server.next_deadline() == pytest.approx(21.0)  # the next PING, 10 s after the ACK


def test_unanswered_ping_closes_with_goaway():
    server, client = connect(Http2Limits(keep_alive_ping_delay=10, keep_alive_ping_timeout=5))
    server.on_timer(10.0)
    server.data_to_send()
    assert server.next_deadline() == pytest.approx(15.0)
    server.on_timer(15.0)
    assert server.should_close
    events = client.receive_data(server.data_to_send())
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


def test_bad_settings_are_refused_with_a_clear_message():
    with pytest.raises(ConfigError, match="keep_alive_ping_delay"):
        Http2Limits(keep_alive_ping_delay=0.1)
    with pytest.raises(ConfigError, match="max_frame_size"):
        Http2Limits(max_frame_size=100)
