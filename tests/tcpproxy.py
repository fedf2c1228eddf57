"""A TCP relay for tests whose way back can be held: what the client sends always passes, what the server answers
waits while :meth:`StallProxy.hold` is in effect (a broker whose acknowledgements stop coming, the connection open)."""

from __future__ import annotations

import socket
import threading

from tests.rtsp_server import free_port


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.client_gone = False


class StallProxy:
    """Listens on 127.0.0.1:``port`` and relays each connection to 127.0.0.1:``target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._held = False
        self._changed = threading.Condition()
        self._pairs: list[_Pair] = []
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def hold(self) -> None:
        """From now on, what the server sends waits (in the proxy and the kernel's buffers)."""
        with self._changed:
            self._held = True

    def release(self) -> None:
        with self._changed:
            self._held = False
            self._changed.notify_all()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.release()
        for pair in self._pairs:
            for s in (pair.client, pair.server):
                try:
                    s.close()
                except OSError:
                    pass

    def __enter__(self) -> StallProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            pair = _Pair(client, server)
            self._pairs.append(pair)
            threading.Thread(target=self._forward, args=(pair,), daemon=True).start()
            threading.Thread(target=self._back, args=(pair,), daemon=True).start()

    def _forward(self, pair: _Pair) -> None:
        """Client → server, always; the client's end becomes the server's end of input (FIN, not a reset)."""
        try:
            while data := pair.client.recv(65536):
                pair.server.sendall(data)
        except OSError:
            pass
        with self._changed:
            pair.client_gone = True
            self._changed.notify_all()
        try:
            pair.server.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _back(self, pair: _Pair) -> None:
        """Server → client while not held; once the client is gone, whatever the server sends is read and dropped."""
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(lambda: not self._held or pair.client_gone or self._closed)
                data = pair.server.recv(65536)
                if not data:
                    break
                if not pair.client_gone:
                    try:
                        pair.client.sendall(data)
                    except OSError:
                        pair.client_gone = True
        except OSError:
            pass
        for s in (pair.client, pair.server):
            try:
                s.close()
            except OSError:
                pass
