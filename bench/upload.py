"""Upload throughput: draftsync's chunked TikTok upload to the loopback fake vs one `curl` process sending
the same chunks, with the same headers, over one persistent connection (`--next`), interleaved in one run.

Two ratios (curl time / draftsync time, so higher is better for draftsync):
- upload only: draftsync's `TikTok.upload` timed inside its process vs the sum of curl's per-request
  `time_total` (target >= 0.9x);
- whole process: a fresh `python` process that loads the config and token and uploads vs the whole curl
  process (process start-up and imports included).
Every chunk's answer is checked on both sides (206 for all but the last, 201 for the last, the fake holds
all bytes with the right digest), so a baseline that silently fails cannot look fast. Also the client's
peak RSS for a 2 GiB video (target <= 100 MiB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import median, workdir

SIZE = int(os.environ.get("BENCH_UPLOAD_MIB", "1024")) * 1024 * 1024
REPS = int(os.environ.get("BENCH_UPLOAD_REPS", "3"))

UPLOAD_SCRIPT = """
import json, sys, time
from pathlib import Path
from draftsync.config import load
from draftsync.push.auth import TokenStore
from draftsync.push.tiktok import TikTok, Upload
cfg, video, up = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
s, _ = load(cfg)
api = TikTok(s, TokenStore(s))
t0 = time.perf_counter()
api.upload(video, Upload(up["publish_id"], up["upload_url"], up["chunk_size"], up["count"], time.monotonic()),
           video.stat().st_size)
print(time.perf_counter() - t0)
"""


def main() -> None:
    import blake3

    from draftsync.config import load
    from draftsync.push.auth import TokenStore
    from draftsync.push.tiktok import TikTok, chunk_plan, chunk_range
    from tests.fakeapi import FakeServer, tiktok_config

    base = workdir("upload")
    fake = FakeServer()
    fake.state.pending_cap = fake.state.init_per_minute = 10**6  # the benchmark inits many times in a minute
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
    digest = blake3.blake3()
    with video.open("wb") as f:
        for _ in range(SIZE // (64 << 20)):
            block = os.urandom(64 << 20)
            digest.update(block)
            f.write(block)
    want = "blake3:" + digest.hexdigest()
    size = video.stat().st_size
    api = TikTok(s, TokenStore(s))

    def landed(publish_id: str) -> None:
        task = fake.state.tasks.pop(publish_id)
        fake.state.by_upload.pop(task.upload_id, None)
        if task.received != size or task.digest != want:
            raise SystemExit(f"upload {publish_id} incomplete: {task.received} of {size} bytes")

    # The chunks curl sends, cut once (the plan is the same for every init of this size).
    cs, count = chunk_plan(size, s.tiktok.chunk_size)
    chunks = []
    for i in range(count):
        a, b = chunk_range(i, size, cs, count)
        p = base / f"chunk{i}"
        with video.open("rb") as src, p.open("wb") as dst:
            src.seek(a)
            dst.write(src.read(b - a + 1))
        chunks.append((p, a, b))

    ds_up, ds_whole, cu_up, cu_whole, connects = [], [], [], [], []
    for _ in range(REPS):
        # draftsync, in this process (upload only)
        up = api.init(size)
        t0 = time.perf_counter()
        api.upload(video, up, size)
        ds_up.append(time.perf_counter() - t0)
        landed(up.publish_id)

        # draftsync, a fresh process (whole)
        up = api.init(size)
        arg = json.dumps({"publish_id": up.publish_id, "upload_url": up.upload_url, "chunk_size": up.chunk_size,
                          "count": up.count})  # fmt: skip
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", UPLOAD_SCRIPT, str(cfg), str(video), arg], capture_output=True,
                           text=True, check=True)  # fmt: skip
        ds_whole.append(time.perf_counter() - t0)
        float(r.stdout)
        landed(up.publish_id)

        # curl: one process, one connection, every chunk's status checked. `-T` streams each chunk from
        # its file as draftsync streams from the video; curl would append the file name to a URL ending
        # in "/" (the upload URL does), so the exact path and query go in `--request-target`.
        up = api.init(size)
        u = urlsplit(up.upload_url)
        cmd = ["curl", "-sS"]
        for i, (p, a, b) in enumerate(chunks):
            if i:
                cmd.append("--next")
            cmd += ["-o", "/dev/null", "-w", "%{http_code} %{time_total} %{num_connects}\n", "-T", str(p),
                    "--request-target", f"{u.path}?{u.query}", "-H", "Content-Type: video/mp4", "-H", "Expect:",
                    "-H", f"Content-Range: bytes {a}-{b}/{size}", f"{u.scheme}://{u.netloc}/{p.name}"]  # fmt: skip
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        cu_whole.append(time.perf_counter() - t0)
        lines = [ln.split() for ln in r.stdout.splitlines()]
        codes = [ln[0] for ln in lines]
        if codes != ["206"] * (len(chunks) - 1) + ["201"]:
            raise SystemExit(f"curl baseline failed: statuses {codes[:5]}... {r.stderr}")
        cu_up.append(sum(float(ln[1]) for ln in lines))
        connects.append(sum(int(ln[2]) for ln in lines))
        landed(up.publish_id)
    for p, _, _ in chunks:
        p.unlink()

    mib = size / 2**20
    print(f"upload: {mib:.0f} MiB in {count} chunks of {cs} bytes to the loopback fake, "
          f"{REPS} interleaved repetitions (medians); curl opened {max(connects)} connection(s) per run")  # fmt: skip
    for name, d, c in (("upload only", median(ds_up), median(cu_up)),
                       ("whole process", median(ds_whole), median(cu_whole))):  # fmt: skip
        print(f"  {name:<13}  curl {c:6.2f} s ({mib / c:5.0f} MiB/s)  draftsync {d:6.2f} s ({mib / d:5.0f} MiB/s)"
              f"  ratio {c / d:.2f}x" + ("  (target >= 0.9x)" if name == "upload only" else ""))  # fmt: skip

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


if __name__ == "__main__":
    main()
