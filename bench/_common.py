"""Helpers shared by the benchmarks: a work folder, a config, a real video header, timing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def workdir(name: str) -> Path:
    base = Path(os.environ.get("DRAFTSYNC_BENCH_DIR") or tempfile.gettempdir()) / f"draftsync-bench-{name}"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    return base


def write_config(base: Path, settle: float = 5.0, **archive: object) -> Path:
    cfg = base / "draftsync.toml"
    cfg.write_text(
        f'[watch]\npaths = ["{base}/inbox"]\nsettle_seconds = {settle}\nrescan_minutes = 600\n'
        f'[archive]\nroot = "{base}/archive"\nmin_free_mib = 0\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in archive.items())
        + f'[state]\ndir = "{base}/state"\n[log]\nformat = "json"\nlevel = "warning"\n'
    )
    (base / "inbox").mkdir(exist_ok=True)
    return cfg


def real_video_bytes(seconds: float = 2.0) -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import make_video

    d = Path(tempfile.mkdtemp())
    data = make_video(d / "v.mp4", seconds=seconds, size=(640, 360)).read_bytes()
    shutil.rmtree(d)
    return data


def draftsync(*args: str, config: Path) -> list[str]:
    return [sys.executable, "-m", "draftsync", "--config", str(config), *args]


def timed(cmd: list[str] | str, **kw: object) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, shell=isinstance(cmd, str), **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def load_average() -> float:
    """The 1-minute load average: other work on the machine's two cores inflates every wall time."""
    return os.getloadavg()[0]


def precompile() -> None:
    """Compile draftsync's modules to bytecode once, as an installed package has them: with
    PYTHONDONTWRITEBYTECODE set (or a read-only tree) every run would otherwise compile them again, and a
    start-up figure would include it."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "draftsync")], check=True)
