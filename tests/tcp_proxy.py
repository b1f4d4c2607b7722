"""A loopback TCP proxy a test can cut, to take a service (Redis) away from the hubs behind it, or that
holds what it forwards a while, to put a service a network hop away (a benchmark's PostgreSQL).

Threads, not the test's event loop: the proxy must keep pumping while the test awaits, on either
backend, and a cut must look to the hub exactly like a lost network link (the socket closes).
"""

import socket
import threading
import time
from types import TracebackType


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`, each chunk after `delay_seconds` (each way). `cut()` closes
    every connection and refuses new ones until `restore()`."""

    def __init__(self, target_host: str, target_port: int, *, delay_seconds: float = 0.0) -> None:
        self._target = (target_host, target_port)
        self._delay = delay_seconds
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "TcpProxy":
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        _close(self._listener)  # shutdown() wakes the thread blocked in accept(); close() alone does not
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener closed
            with self._lock:
                if self._cut:
                    _close(client)
                    continue
                try:
                    upstream = socket.create_connection(self._target, timeout=5)
                except OSError:
                    _close(client)
                    continue
                upstream.settimeout(None)
                for sock in (client, upstream):  # forward each chunk at once, as the hop it stands for would
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._open |= {client, upstream}
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self._delay:
                    time.sleep(self._delay)
                sink.sendall(data)
        except OSError:
            pass
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
