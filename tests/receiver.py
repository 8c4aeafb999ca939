"""A real HTTP receiver on 127.0.0.1 for notification tests: Apprise's json:// posts and Healthchecks-style
pings land here; answers can be scripted (fail the next N requests, or hang until released)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    got: list[Received] = field(default_factory=list)
    fail_next: int = 0  # answer 500 to this many requests
    arrived: int = 0  # requests that reached the handler (answered or not)
    hang: threading.Event | None = None  # while set to an unset Event, requests wait for it
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/notify") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def http(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def messages(self) -> list[dict[str, Any]]:
        """Notifications delivered (answered 200), in order."""
        with self.lock:
            return [r.json() for r in self.got if r.path.startswith("/notify")]

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.got]

    def close(self) -> None:
        if self.hang is not None:
            self.hang.set()
        self.server.shutdown()
        self.server.server_close()


def start_receiver() -> Receiver:
    rec: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            with rec.lock:
                rec.arrived += 1
            if rec.hang is not None:
                rec.hang.wait(30)
            with rec.lock:
                failing = rec.fail_next > 0
                if failing:
                    rec.fail_next -= 1
                else:
                    rec.got.append(Received("POST", self.path, body))
            self.send_response(500 if failing else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return rec
