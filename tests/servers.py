"""Small real servers for the agent to read from in tests: HTTP(S) that serves video files (whole, cut short, or at
a paced rate with stalls), and TCP that accepts and never answers. Each runs in threads of the test process, on
127.0.0.1, and counts its connections."""

from __future__ import annotations

import contextlib
import http.server
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.connections += 1
        path = self.server.root / self.path.split("?", 1)[0].lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        try:
            self.server.send(self.wfile, data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    root: Path
    connections: int

    def send(self, out, data: bytes) -> None:
        out.write(data)


@contextlib.contextmanager
def http_files(
    root: Path, *, tls: tuple[Path, Path] | None = None, cut_at: int | None = None, rate: float | None = None,
    stall_every_s: float = 0.0, stall_s: float = 0.0,
) -> Iterator[_Server]:  # fmt: skip
    """Serves the files under ``root`` at ``http(s)://127.0.0.1:{server.server_port}/NAME``.

    ``tls``: (cert, key) for HTTPS. ``cut_at``: send only this many bytes of a file, then close (a camera that drops
    the connection after a few frames). ``rate``: bytes per second (a live stream), and with ``stall_every_s`` a
    pause of ``stall_s`` that often, after which the data comes in a burst (network jitter)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.root, server.connections = root, 0
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)

    def send(out, data: bytes) -> None:
        data = data[:cut_at] if cut_at is not None else data
        if rate is None:
            out.write(data)
            return
        start, chunk, sent, stalled = time.monotonic(), 1316, 0, 0.0  # 7 TS packets a write
        while sent < len(data):
            elapsed = time.monotonic() - start
            if stall_every_s and elapsed - stalled >= stall_every_s:
                time.sleep(stall_s)  # then catch up: what was due meanwhile goes at once
                stalled = time.monotonic() - start
            due = (time.monotonic() - start) * rate
            if sent < due:
                out.write(data[sent : sent + chunk])
                sent += chunk
            else:
                time.sleep(min(0.005, (sent - due) / rate))

    server.send = send  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class SilentServer:
    """Accepts TCP connections and never answers (an RTSP server stuck before its reply): ``port``, ``connections``."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()
