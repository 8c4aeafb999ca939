"""Upload throughput: draftsync's chunked TikTok upload to the loopback fake vs `curl` PUTting the same
chunks with the same headers, in one run (target >= 0.7x curl), and the client's peak RSS for a
2 GiB video (target <= 100 MiB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import median, workdir

SIZE = int(os.environ.get("BENCH_UPLOAD_MIB", "1024")) * 1024 * 1024


def main() -> None:
    import httpx

    from draftsync.config import load
    from draftsync.push.auth import TokenStore
    from draftsync.push.tiktok import TikTok, chunk_range
    from tests.fakeapi import FakeServer, tiktok_config

    base = workdir("upload")
    fake = FakeServer()
    tok = fake.issue_token()
    (base / "tok.json").write_text(json.dumps(tok))
    t = tiktok_config(fake.base, str(base / "tok.json"))
    cfg = base / "c.toml"
    cfg.write_text(
        f'[watch]\npaths = ["{base}/in"]\n[archive]\nroot = "{base}/a"\n[state]\ndir = "{base}/s"\n[tiktok]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in t.items())
    )
    s, _ = load(str(cfg))
    video = base / "video.mp4"
    with video.open("wb") as f:
        for _ in range(SIZE // (64 << 20)):
            f.write(os.urandom(64 << 20))
    size = video.stat().st_size
    api = TikTok(s, TokenStore(s))

    ds, cu = [], []
    for _ in range(2):
        up = api.init(size)
        t0 = time.perf_counter()
        api.upload(video, up, size)
        ds.append(time.perf_counter() - t0)

        up = api.init(size)
        chunks = []
        for i in range(up.count):
            a, b = chunk_range(i, size, up.chunk_size, up.count)
            p = base / f"chunk{i}"
            with video.open("rb") as src, p.open("wb") as dst:
                src.seek(a)
                dst.write(src.read(b - a + 1))
            chunks.append((p, a, b))
        t0 = time.perf_counter()
        for p, a, b in chunks:
            subprocess.run(["curl", "-sS", "-o", "/dev/null", "-T", str(p), "-H", "Content-Type: video/mp4",
                            "-H", f"Content-Range: bytes {a}-{b}/{size}", up.upload_url], check=True)  # fmt: skip
        cu.append(time.perf_counter() - t0)
        for p, _, _ in chunks:
            p.unlink()
    fake.state.tasks.clear()
    d, c = median(ds), median(cu)
    mib = size / 2**20
    print(f"upload: {mib:.0f} MiB in {up.count} chunks of {up.chunk_size} bytes to the loopback fake")
    print(f"  curl      {c:6.2f} s  ({mib / c:.0f} MiB/s)")
    print(f"  draftsync {d:6.2f} s  ({mib / d:.0f} MiB/s)")
    print(f"  throughput ratio draftsync/curl = {c / d:.2f}x  (target >= 0.7x)")

    big = base / "big.mp4"
    with big.open("wb") as f:
        f.truncate(2 * 1024**3)
    script = textwrap.dedent(f"""
        from pathlib import Path
        from draftsync.config import load
        from draftsync.push.auth import TokenStore
        from draftsync.push.tiktok import TikTok
        s, _ = load({str(cfg)!r})
        api = TikTok(s, TokenStore(s))
        up = api.init({2 * 1024**3})
        api.upload(Path({str(big)!r}), up, {2 * 1024**3})
        print([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    print(f"  client peak RSS for a 2 GiB video: {int(r.stdout) / 1024:.0f} MiB  (target <= 100 MiB)")
    fake.close()
    del httpx


if __name__ == "__main__":
    main()
