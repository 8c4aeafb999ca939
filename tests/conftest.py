"""Shared fixtures: real short videos made with PyAV, temp folders with a config, the real daemon as a
subprocess, and a bounded poll helper (no sleeps that hope)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pytest

_VIDEO_CACHE: dict[tuple[Any, ...], bytes] = {}


def make_video(
    path: Path,
    *,
    seconds: float = 1.0,
    size: tuple[int, int] = (320, 240),
    fps: int = 30,
    seed: int = 0,
    creation_time: str | None = None,
    rotation: int = 0,
    codec: str = "libx264",
    audio: bool = False,
) -> Path:
    """Encode a short real video with moving, textured content (cached per parameters)."""
    key = (seconds, size, fps, seed, creation_time, rotation, codec, audio, path.suffix)
    if key not in _VIDEO_CACHE:
        import tempfile

        import av

        # Encode outside any watched folder; only the finished bytes are written to `path`.
        tmp = Path(tempfile.mkdtemp(prefix="draftsync-gen-")) / ("gen" + path.suffix)
        rng = np.random.default_rng(seed)
        w, h = size
        base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        with av.open(str(tmp), "w") as out:
            if creation_time:
                out.metadata["creation_time"] = creation_time
            s = out.add_stream(codec, rate=fps)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            if codec == "libx264":
                s.options = {"preset": "ultrafast"}
            if rotation:
                s.set_display_rotation(rotation)
            a = None
            if audio:
                a = out.add_stream("aac", rate=44100)
            for i in range(int(seconds * fps)):
                frame = np.roll(base, shift=i * 4, axis=1)
                vf = __import__("av").VideoFrame.from_ndarray(frame, format="rgb24")
                for p in s.encode(vf):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)
            if a is not None:
                import av as _av

                samples = int(seconds * 44100)
                t = np.arange(samples) / 44100
                pcm = (np.sin(2 * np.pi * 440 * t) * 0.2).astype(np.float32).reshape(1, -1)
                frame = _av.AudioFrame.from_ndarray(pcm, format="fltp", layout="mono")
                frame.sample_rate = 44100
                frame.time_base = Fraction(1, 44100)
                for p in a.encode(frame):
                    out.mux(p)
                for p in a.encode():
                    out.mux(p)
        _VIDEO_CACHE[key] = tmp.read_bytes()
        tmp.unlink()
        tmp.parent.rmdir()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_VIDEO_CACHE[key])
    return path


def b3(path: Path | bytes) -> str:
    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    return "blake3:" + blake3.blake3(data).hexdigest()


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `pred` until it returns something truthy or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


def _toml(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(v)


@dataclass
class Env:
    base: Path
    inbox: Path
    archive: Path
    state: Path
    config: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def write_config(self, **sections: dict[str, Any]) -> None:
        cfg: dict[str, dict[str, Any]] = {
            "watch": {"paths": [str(self.inbox)], "settle_seconds": 0.5, "rescan_minutes": 60, "poll_seconds": 0.5},
            "archive": {"root": str(self.archive), "timezone": "UTC", "min_free_mib": 0},
            "state": {"dir": str(self.state)},
            "log": {"level": "info", "format": "json"},
        }
        labels = sections.pop("labels", None)
        for k, v in sections.items():
            cfg.setdefault(k, {}).update(v)
        lines = []
        for sec, body in cfg.items():
            lines.append(f"[{sec}]")
            for k, v in body.items():
                lines.append(f"{k} = {_toml(v)}")
        for rule in labels or []:
            lines.append("[[labels]]")
            lines += [f"{k} = {_toml(v)}" for k, v in rule.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def archived_videos(self) -> list[Path]:
        return sorted(
            p
            for p in self.archive.rglob("*")
            if p.is_file()
            and not p.name.endswith(".json")
            and not any(x.startswith(".") for x in p.relative_to(self.archive).parts)
        )

    def temps(self) -> list[Path]:
        return [p for p in self.archive.rglob(".draftsync-*.part")]

    def sidecars(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.archive.rglob("*.json"))]

    def cli(
        self, *args: str, check: bool = False, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [sys.executable, "-m", "draftsync", "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
        )  # fmt: skip
        if check and r.returncode != 0:
            raise AssertionError(f"draftsync {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def status(self) -> dict[str, Any]:
        # status exits 0 healthy, 1 unhealthy, 3 not running; the JSON is printed in every case.
        r = self.cli("status", "--json")
        if r.returncode not in (0, 1, 3):
            raise AssertionError(f"draftsync status exited {r.returncode}\n{r.stdout}\n{r.stderr}")
        return json.loads(r.stdout)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path, tmp_path / "inbox", tmp_path / "archive", tmp_path / "state", tmp_path / "draftsync.toml")
    e.inbox.mkdir()
    e.write_config()
    return e


class DaemonProc:
    """The real daemon as a subprocess; `prefix` wraps the command (unshare, setpriv), `ready=False` returns
    without waiting for it to get ready (for a daemon that is meant to refuse to start)."""

    def __init__(self, env: Env, extra_env: dict[str, str] | None = None, prefix: list[str] | None = None,
                 ready: bool = True) -> None:  # fmt: skip
        self.env = env
        self.log_path = env.base / f"daemon-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "draftsync", "--config", str(env.config), "run"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(extra_env or {})},
        )  # fmt: skip
        if not ready:
            return
        wait_for(
            lambda: '"ready"' in self.log_path.read_text() or self.proc.poll() is not None, 30, what="daemon ready"
        )
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited early:\n{self.log_path.read_text()}")

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError("daemon did not stop within the deadline") from None
        self.log.close()
        return self.proc.returncode

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def daemon(env: Env) -> Iterator[Callable[..., DaemonProc]]:
    procs: list[DaemonProc] = []

    def start(**kw: Any) -> DaemonProc:
        d = DaemonProc(env, **kw)
        procs.append(d)
        return d

    yield start
    for d in procs:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)


# Root that obeys file permissions: a child without the capabilities that let root read, search or chmod what
# is not open to it. The files stay root's, so the test's own venv (wherever CI cloned it) stays readable,
# which is not so for `nobody`.
BOUND_BY_PERMISSIONS = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
