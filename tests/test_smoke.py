from support import echo_app, recv_until_closed


def test_get_and_post_over_a_real_socket(serve):
    server = serve(echo_app)
    sock = server.connect()
    sock.sendall(
        b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    )
    data = recv_until_closed(sock)
    first, _, second = data.partition(
        b"HTTP/1.1 200 OK",
    )[2].partition(b"HTTP/1.1 200 OK")
    assert b"GET /a b=1 0\n" in first
    assert b"POST /p  3\nabc" in second
