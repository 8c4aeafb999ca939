"""Offsite copy throughput: `draftsync offsite sync` of 1 GiB (16 x 64 MiB videos and their sidecars) to a
local SeaweedFS vs what `aws s3 cp --recursive` does (boto3's `upload_file` per file: its transfer manager,
8 MiB multipart chunks, 10 threads) to the same server, interleaved, each into a fresh bucket, each a
fresh process (target >= 0.8x); and the client's peak RSS copying a 2 GiB video."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import draftsync, median, workdir, write_config

VIDEOS = int(os.environ.get("BENCH_OFFSITE_VIDEOS", "16"))
REPS = int(os.environ.get("BENCH_REPS", "3"))

BASELINE = textwrap.dedent("""
    import os, sys, boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    endpoint, key, secret, bucket, root = sys.argv[1:6]
    c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                     region_name="us-east-1", config=Config(request_checksum_calculation="when_required",
                     response_checksum_validation="when_required", max_pool_connections=10))
    tc = TransferConfig()  # the AWS CLI's defaults: 8 MiB threshold and chunks, 10 threads
    for d, _, files in os.walk(root):
        for f in sorted(files):
            p = os.path.join(d, f)
            c.upload_file(p, bucket, "home/" + os.path.relpath(p, root), Config=tc)
    print([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
""")

DRAFTSYNC = textwrap.dedent("""
    import sys
    from draftsync.cli import main
    code = main(sys.argv[1:])
    print([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
    sys.exit(code)
""")


def configure(cfg: Path, base: Path, server: object, bucket: str) -> None:
    from tests.s3server import ACCESS_KEY

    text = cfg.read_text().split("[offsite]")[0]
    cfg.write_text(text + f'[offsite]\nurl = "s3://{bucket}/home"\nendpoint_url = "{server.endpoint}"\n'  # type: ignore[attr-defined]
                   f'access_key_id = "{ACCESS_KEY}"\nsecret_access_key_file = "{base / "secret"}"\n')  # fmt: skip


def run(cmd: list[str]) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of a child that prints its VmHWM last."""
    t = time.perf_counter()
    r = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t, int(r.stdout.split()[-1])


def fill(inbox: Path, n: int, size: int) -> None:
    for i in range(n):
        with (inbox / f"VID_{i:03d}.mp4").open("wb") as f:
            for _ in range(size // (16 << 20)):
                f.write(os.urandom(16 << 20))
        past = time.time() - 60
        os.utime(inbox / f"VID_{i:03d}.mp4", (past, past))


def main() -> None:
    from tests import s3server

    base = workdir("offsite")
    server = s3server.start(base, volume_mib=256)
    try:
        (base / "secret").write_text(s3server.SECRET_KEY + "\n")
        cfg = write_config(base, settle=0.1)
        fill(base / "inbox", VIDEOS, 64 << 20)
        subprocess.run(draftsync("scan", "--no-compare", config=cfg), check=True, capture_output=True)
        archive = base / "archive"
        total = sum(p.stat().st_size for p in archive.rglob("*") if p.is_file())
        ds, bl, rss_d, rss_b = [], [], [], []
        for _ in range(REPS):
            b = server.new_bucket()
            configure(cfg, base, server, b)  # a new bucket: the catalog's copy state starts over
            t, rss = run([sys.executable, "-c", DRAFTSYNC, "--config", str(cfg), "offsite", "sync"])
            ds.append(t)
            rss_d.append(rss)
            b = server.new_bucket()
            t, rss = run([sys.executable, "-c", BASELINE, server.endpoint, s3server.ACCESS_KEY, s3server.SECRET_KEY,
                          b, str(archive)])  # fmt: skip
            bl.append(t)
            rss_b.append(rss)
        d, c = median(ds), median(bl)
        mib = total / 2**20
        print(f"offsite: {mib:.0f} MiB ({VIDEOS} videos + sidecars) to SeaweedFS on 127.0.0.1, {REPS} interleaved runs")
        print(
            f"  boto3 upload_file per file  {c:6.2f} s  ({mib / c:.0f} MiB/s)  runs {', '.join(f'{x:.2f}' for x in bl)}"
        )
        print(
            f"  draftsync offsite sync      {d:6.2f} s  ({mib / d:.0f} MiB/s)  runs {', '.join(f'{x:.2f}' for x in ds)}"
        )
        print(f"  throughput ratio draftsync/baseline = {c / d:.2f}x  (target >= 0.8x)")
        print(f"  peak RSS: draftsync {max(rss_d) / 1024:.0f} MiB, baseline {max(rss_b) / 1024:.0f} MiB")

        # One 2 GiB video: the client's peak RSS (bounded by concurrency x part size, not by the file).
        big_base = base / "big"
        big_base.mkdir()
        (big_base / "secret").write_text(s3server.SECRET_KEY + "\n")
        cfg2 = write_config(big_base, settle=0.1)
        fill(big_base / "inbox", 1, 2 << 30)
        subprocess.run(draftsync("scan", "--no-compare", config=cfg2), check=True, capture_output=True)
        configure(cfg2, big_base, server, server.new_bucket())
        t, rss = run([sys.executable, "-c", DRAFTSYNC, "--config", str(cfg2), "offsite", "sync"])
        tb, rss_base = run([sys.executable, "-c", BASELINE, server.endpoint, s3server.ACCESS_KEY, s3server.SECRET_KEY,
                            server.new_bucket(), str(big_base / "archive")])  # fmt: skip
        print(f"  2 GiB video: draftsync {t:.1f} s, peak RSS {rss / 1024:.0f} MiB; "
              f"baseline {tb:.1f} s, peak RSS {rss_base / 1024:.0f} MiB")  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    main()
