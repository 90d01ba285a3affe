"""Bounded over time: /metrics answered while slow clients hold connections."""
import socket
import time
import urllib.request


def scrape(server, timeout=10):
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=timeout).read().decode()


def test_a_scrape_is_answered_while_slow_clients_hold_connections(server):
    slow = []
    try:
        for _ in range(4):  # more than civetweb's 2 default threads, each waiting 30 s
            c = socket.create_connection(("127.0.0.1", server.metrics_port))
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n")  # never finished
            slow.append(c)
        time.sleep(0.5)  # let the server take them
        t0 = time.time()
        body = scrape(server, timeout=5)
        assert "superweight_requests_total" in body
        print(f"scrape with {len(slow)} slow clients connected: {time.time() - t0:.3f} s")
        # The request timeout ends a client that never finishes its headers.
        for c in slow:
            c.settimeout(20)
            try:
                while c.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        print(f"slow clients dropped after {time.time() - t0:.1f} s")
        assert time.time() - t0 < 20
    finally:
        for c in slow:
            c.close()
