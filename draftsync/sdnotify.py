"""sd_notify: tell systemd we are READY, still alive (WATCHDOG), what we do (STATUS) and STOPPING.

A datagram to $NOTIFY_SOCKET; without that variable every call is a no-op, so the daemon runs the
same under systemd, in a terminal and in tests.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET", "")
        self.addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        ok = usec.isdigit() and (not pid or pid == str(os.getpid()))
        # Ping at half the interval systemd waits, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = int(usec) / 2_000_000 if ok else None

    def send(self, *lines: str) -> bool:
        if not self.addr:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.addr)
                s.sendall("\n".join(lines).encode())
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")
