"""A real RTSP server for tests: rtsp-server-perl's RTSP::Server, fed by an ffmpeg publisher (RTP over UDP only)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_ports(count: int = 4) -> int:
    """The first of ``count`` consecutive free UDP ports, even (RTP/RTCP pairs): each server gets its own range."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1] & ~1
        if first + count > 65535:
            continue
        sockets = []
        try:
            for port in range(first, first + count):
                sockets.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                sockets[-1].bind(("0.0.0.0", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free UDP port range for RTP")


# rtsp-server-perl itself, with its own RTP port range: the script's `--rtp_start_port` is reset to the package
# default (20000) whenever no stream is mounted, so two servers on one machine would both bind UDP 20000.
_SERVER = """
$RTSP::Server::RTP_START_PORT = RTP_PORT;
my $server = RTSP::Server->new_with_options();
$server->listen;
AnyEvent->condvar->recv;
"""


class RtspServer:
    """``start()`` / ``kill()`` as often as a test likes; the publisher streams a live test pattern (GOP 0.5 s).

    ``sources``: mount path → ``(video file, ffmpeg video filter or None)`` instead: each file is played once in
    real time, re-encoded as a camera would (H.264, GOP one second), all of them starting together, so that two
    mounts of the same file (a sub-stream and a scaled main stream, say) show the same moment at the same time.
    """

    def __init__(self, path: str = "cam1", fps: int = 25, sources: dict[str, tuple[Path, str | None]] | None = None):
        for tool in ("rtsp-server-perl", "ffmpeg"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed: run `make deps` (make test does)")
        self.path, self.fps, self.sources = path, fps, sources
        self.client_port, self.source_port = free_port(), free_port()
        self.rtp_port = free_udp_ports()  # the server's default (20000) would clash with a second server
        self.procs: list[subprocess.Popen] = []

    def url(self, user: str | None = None, password: str | None = None, path: str | None = None) -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"rtsp://{auth}127.0.0.1:{self.client_port}/{path or self.path}"

    def _publishers(self) -> list[tuple[str, list[str]]]:
        if self.sources is None:
            source = ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={self.fps}"]
            return [(self.path, ["-re", *source, "-g", str(self.fps // 2)])]
        return [
            (path, ["-re", "-i", str(video), *(["-vf", vf] if vf else []), "-g", str(self.fps)])
            for path, (video, vf) in self.sources.items()
        ]

    def start(self, timeout: float = 10.0, tries: int = 3) -> None:
        """Server, then publisher; a publisher that exits at once (seen once in CI, under load) is started again."""
        self.procs = [
            subprocess.Popen(
                ["perl", "-MAnyEvent", "-MRTSP::Server", "-e", _SERVER.replace("RTP_PORT", str(self.rtp_port)), "--"]
                + ["-c", str(self.client_port), "-s", str(self.source_port), "-l", "1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        ]
        _wait_listening(self.client_port, timeout)
        _wait_listening(self.source_port, timeout)
        for _ in range(tries):
            started = []
            for path, args in self._publishers():
                log = tempfile.TemporaryFile()  # a file, not a pipe: a running publisher never blocks on its stderr
                publisher = subprocess.Popen(
                    ["ffmpeg", "-v", "error", *args]
                    + ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]
                    + ["-pix_fmt", "yuv420p", "-f", "rtsp", f"rtsp://127.0.0.1:{self.source_port}/{path}"],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
                started.append((publisher, log))
            time.sleep(1.0)  # the publishers announce their streams
            if all(p.poll() is None for p, _ in started):
                self.procs += [p for p, _ in started]
                return
            errors = []
            for p, log in started:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
                log.seek(0)
                errors.append(log.read().decode(errors="replace").strip())
            error = "; ".join(e for e in errors if e)
        self.kill()
        raise RuntimeError(f"the ffmpeg RTSP publisher exited at start {tries} times; last: {error or 'no output'}")

    def kill(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()
            proc.wait(timeout=10)
        self.procs = []


def _wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class RtspProxy:
    """A TCP proxy in front of an RTSP server that counts what its clients ask: ``requests[method]`` for each RTSP
    request (``DESCRIBE``, ``SETUP``, ``PLAY``, ...) that reached the server, and ``sessions``, connections that it
    relayed. A connection that finds the server down is closed before anything is read. RTP over UDP (the server's
    only transport) goes straight between the server and the client."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.sessions = 0
        self.requests: dict[str, int] = {}
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name="rtsp-proxy")
        self._thread.start()

    def url(self, path: str = "cam1") -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path}"

    def count(self, method: str) -> int:
        with self._lock:
            return self.requests.get(method, 0)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self.sessions += 1
                self._open += [client, server]
            threading.Thread(target=self._relay, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._relay, args=(server, client, False), daemon=True).start()

    def _relay(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        pending = b""
        try:
            while data := src.recv(65536):
                if requests:
                    pending += data
                    *lines, pending = pending.split(b"\r\n")
                    for line in lines:
                        method, _, rest = line.partition(b" ")
                        if rest.endswith(b"RTSP/1.0") and method.isupper():
                            with self._lock:
                                name = method.decode()
                                self.requests[name] = self.requests.get(name, 0) + 1
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
