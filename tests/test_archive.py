"""archive: the path template, labels, atomic writes that never replace, sidecars, temp sweeping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from draftsync.archive import (
    Archive,
    ArchiveFile,
    choose_label,
    glob_match,
    layout_fields,
    render_path,
    sanitize_component,
    write_json_atomic,
)
from draftsync.atomic import is_temp
from draftsync.config import ArchiveConfig, LabelRule
from draftsync.errors import ArchiveMissing
from draftsync.fingerprint import MediaFacts

LAYOUT = ArchiveConfig().layout

anything = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
dates = st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC))


def fields(label: str = "camera", stem: str = "clip", ext: str = ".mp4", digest: str = "a" * 64,
           when: datetime = datetime(2026, 5, 1, 18, 30, tzinfo=UTC)) -> dict[str, str]:  # fmt: skip
    return layout_fields(captured=when, digest="blake3:" + digest, label=label, ext=ext, stem=stem, orientation=None)


def test_default_layout_renders_year_month_label_date_time_hash() -> None:
    assert render_path(LAYOUT, fields()) == "2026/05/camera/2026-05-01_183000_aaaaaaaa.mp4"


@settings(max_examples=300)
@given(label=anything, stem=anything, ext=anything, digest=hex64, when=dates,
       layout=st.sampled_from([LAYOUT, "{label}/{stem}_{hash8}{ext}", "{label}/{year}/{orientation}/{date} {stem} {hash}{ext}",
                              "{stem}/{hash8}{ext}", "{label}/{stem}.{hash8}{ext}"]))  # fmt: skip
def test_rendered_paths_never_escape_the_root(tmp_path_factory: pytest.TempPathFactory, label: str, stem: str, ext: str,
                                              digest: str, when: datetime, layout: str) -> None:  # fmt: skip
    rel = render_path(layout, fields(label, stem, ext, digest, when))
    root = "/archive/root"
    full = os.path.normpath(os.path.join(root, rel))
    assert full.startswith(root + "/")
    parts = rel.split("/")
    assert len(parts) == len(layout.split("/"))
    for part in parts:
        assert part not in ("", ".", "..") and not part.startswith(".") and "\x00" not in part
        assert len(part.encode()) <= 216
        assert not any(c in part for c in '<>:"|?*\\') and not part.endswith((".", " "))
        assert part.split(".")[0].upper() not in ("CON", "PRN", "AUX", "NUL", "COM1", "LPT1")
    # Every .json file in the archive is a sidecar, and our temp names are swept: a video is neither.
    assert not rel.lower().endswith(".json") and not is_temp(parts[-1])


@given(label=anything, stem=anything, digest=hex64, when=dates)
def test_rendering_is_stable(label: str, stem: str, digest: str, when: datetime) -> None:
    f = fields(label, stem, ".mov", digest, when)
    assert render_path(LAYOUT, f) == render_path(LAYOUT, dict(f))


@given(a=hex64, b=hex64, label=anything, stem=anything, when=dates)
def test_different_contents_get_different_paths(a: str, b: str, label: str, stem: str, when: datetime) -> None:
    if a[:8] == b[:8]:
        return  # the archive resolves true hash8 collisions with a suffix (tested below)
    assert render_path(LAYOUT, fields(label, stem, ".mp4", a, when)) != render_path(
        LAYOUT, fields(label, stem, ".mp4", b, when)
    )


@pytest.mark.parametrize("value", ["..", ".", "../../etc", "/abs", "a/b", "\\win", ".hidden", "con:", "\x00x"])
def test_hostile_values_are_one_safe_component(value: str) -> None:
    c = sanitize_component(value)
    assert "/" not in c and "\\" not in c and c not in ("", ".", "..") and not c.startswith(".")


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("**/TikTok/**", "TikTok/a.mp4", True),
        ("**/TikTok/**", "phone/TikTok/sub/a.mp4", True),
        ("**/TikTok/**", "phone/NotTikTok/a.mp4", False),
        ("Screen*", "ScreenRecording_1.mp4", True),
        ("*.mov", "a/b.mov", False),
        ("**/*.mov", "a/b.MOV", True),
    ],
)
def test_glob_match(pattern: str, path: str, hit: bool) -> None:
    assert glob_match(pattern, path) is hit


def test_labels_first_match_wins_with_paths_names_and_media_facts() -> None:
    rules = [
        LabelRule(label="tiktok", path="**/TikTok/**"),
        LabelRule(label="screen", name="Screen*"),
        LabelRule(label="shorts", orientation="portrait", max_duration=60),
    ]
    portrait_short = MediaFacts(width=1080, height=1920, duration=30)
    landscape = MediaFacts(width=1920, height=1080, duration=30)
    assert choose_label(rules, "camera", "x/TikTok/a.mp4", "a.mp4", landscape) == "tiktok"
    assert choose_label(rules, "camera", "ScreenRecording.mp4", "ScreenRecording.mp4", portrait_short) == "screen"
    assert choose_label(rules, "camera", "a.mp4", "a.mp4", portrait_short) == "shorts"
    assert choose_label(rules, "camera", "a.mp4", "a.mp4", landscape) == "camera"
    assert choose_label(rules, "camera", "a.mp4", "a.mp4", None) == "camera"


def test_atomic_file_never_replaces_an_existing_file(tmp_path: Path) -> None:
    final = tmp_path / "v.mp4"
    final.write_bytes(b"original")
    with ArchiveFile(tmp_path) as f:
        f.write(b"new")
        with pytest.raises(FileExistsError):
            f.commit(final, replace=False)
    assert final.read_bytes() == b"original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # no temp left


def test_sidecars_are_replaced_atomically(tmp_path: Path) -> None:
    p = tmp_path / "v.mp4.json"
    write_json_atomic(p, {"a": 1})
    write_json_atomic(p, {"a": 2})
    assert p.read_text().strip().endswith("}") and '"a": 2' in p.read_text()
    assert [x.name for x in tmp_path.iterdir()] == ["v.mp4.json"]


def test_place_adds_a_suffix_for_other_content_and_adopts_the_same(tmp_path: Path) -> None:
    arch = Archive(tmp_path, LAYOUT)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "v.mp4").write_bytes(b"other content")
    import blake3

    data = b"our content"
    digest = "blake3:" + blake3.blake3(data).hexdigest()
    t = ArchiveFile(tmp_path / "d")
    t.write(data)
    rel, adopted = arch.place(t, "d/v.mp4", digest, len(data))
    assert (rel, adopted) == ("d/v_1.mp4", False)
    assert (tmp_path / "d" / "v.mp4").read_bytes() == b"other content"
    t2 = ArchiveFile(tmp_path / "d")
    t2.write(data)
    rel2, adopted2 = arch.place(t2, "d/v.mp4", digest, len(data))
    assert (rel2, adopted2) == ("d/v_1.mp4", True)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["v.mp4", "v_1.mp4"]


def test_sweep_removes_only_our_temp_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".draftsync-abc.part").write_bytes(b"partial")
    (tmp_path / "a" / "v.mp4").write_bytes(b"v")
    arch = Archive(tmp_path, LAYOUT)
    assert arch.sweep_temps() == ["a/.draftsync-abc.part"]
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["v.mp4"]


# --- full disks, for real ------------------------------------------------------------------------------

WRITE_4_MIB = """
import sys
from pathlib import Path
from draftsync.archive import ArchiveFile
from draftsync.errors import ArchiveFull
target = Path(sys.argv[1])
try:
    with ArchiveFile(target) as f:
        for _ in range(int(sys.argv[2])):
            f.write(b"\\x01" * 512 * 1024)
        f.commit(target / "v.mp4", replace=False)
except ArchiveFull as e:
    print("inodes" if e.inodes else "bytes", str(e))
print("left:", sorted(p.name for p in target.iterdir()))
"""


def _run_on_tmpfs(tmp_path: Path, options: str, prepare: str, writes: int) -> str:
    """Run the write in a process with a real small tmpfs: mounted here when we may (root), else in a user
    and mount namespace (`unshare -rm`, as an unprivileged user can); skipped where neither works."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    script = f'mount -t tmpfs -o {options} tmpfs "$1" && cd "$1" && {prepare} && exec "$2" -c "$3" "$1" {writes}'
    for prefix in (["sh", "-c"], ["unshare", "-rm", "sh", "-c"]):
        r = subprocess.run([*prefix, script, "sh", str(mnt), sys.executable, WRITE_4_MIB], capture_output=True,
                           text=True, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        if r.returncode == 0:
            return r.stdout
    pytest.skip(f"cannot mount a small tmpfs here, neither as root nor in a user namespace: {r.stderr.strip()}")


def test_a_full_disk_raises_archive_full_and_leaves_nothing(tmp_path: Path) -> None:
    out = _run_on_tmpfs(tmp_path, "size=1m", "true", writes=4)
    assert out.startswith("bytes the archive disk is full") and out.endswith("left: []\n"), out


def test_an_archive_out_of_inodes_is_full_too_and_says_so(tmp_path: Path) -> None:
    # 4 inodes: the root and three files; the temp file finds none left.
    out = _run_on_tmpfs(tmp_path, "size=8m,nr_inodes=4", "touch a b c", writes=1)
    assert out.startswith("inodes the archive disk has no free inodes"), out
    assert out.endswith("left: ['a', 'b', 'c']\n")


def test_folders_are_made_below_the_root_never_the_root_itself(tmp_path: Path) -> None:
    arch = Archive(tmp_path / "usb", LAYOUT)
    with pytest.raises(ArchiveMissing, match="does not exist"):
        arch.make_dirs("2026/05/camera")
    assert not (tmp_path / "usb").exists()
    (tmp_path / "usb").mkdir()
    assert arch.make_dirs("2026/05/camera") == tmp_path / "usb" / "2026" / "05" / "camera"


def test_a_long_copy_beats_per_chunk(tmp_path: Path) -> None:
    import io

    from draftsync.fingerprint import READ_CHUNK, new_hasher

    beats: list[int] = []
    arch = Archive(tmp_path, LAYOUT)
    res = arch.copy_in(io.BytesIO(b"x" * (3 * READ_CHUNK + 1)), tmp_path, new_hasher(), beat=lambda: beats.append(1))
    res.temp.abort()
    assert len(beats) >= 4  # a worker copying 4 GB to a slow disk is busy, not dead


# --- names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "ext", "name"),
    [
        ("CON", ".mp4", "CON_.aaaaaaaa.mp4"),  # Windows reserves CON whatever follows the dot
        ("nul", ".mov", "nul_.aaaaaaaa.mov"),
        ("COM1", ".mp4", "COM1_.aaaaaaaa.mp4"),
        ("lpt9", ".mp4", "lpt9_.aaaaaaaa.mp4"),
        ("CON ", ".mp4", "CON _.aaaaaaaa.mp4"),  # spaces before the dot do not hide a device name
        ("CONSOLE", ".mp4", "CONSOLE.aaaaaaaa.mp4"),  # not reserved
        ('a<b>c:d"e|f?g*h\\i', ".mp4", "a_b_c_d_e_f_g_h_i.aaaaaaaa.mp4"),  # what SMB clients cannot open
        ("\x85next line", ".mp4", "_next line.aaaaaaaa.mp4"),  # C1 control characters
        ("Caf\udce9", ".mp4", "Café.aaaaaaaa.mp4"),  # Latin-1 bytes from an old Samba share
        ("x", ".json", "x.aaaaaaaa.json_"),  # never reads as a sidecar
        ("x", ".JSON", "x.aaaaaaaa.json_"),
    ],
)
def test_archive_names_are_safe_on_every_filesystem(stem: str, ext: str, name: str) -> None:
    assert render_path("{label}/{stem}.{hash8}{ext}", fields(stem=stem, ext=ext)) == f"camera/{name}"
    assert render_path("{stem}/{hash8}{ext}", fields(stem="CON", ext=".mp4")) == "CON_/aaaaaaaa.mp4"
    assert render_path("{stem}/{hash8}{ext}", fields(stem="trailing dot. ")) == "trailing dot/aaaaaaaa.mp4"


def test_sidecars_keep_names_that_are_not_utf8_losslessly(tmp_path: Path) -> None:
    from draftsync.archive import record_from_sidecar, sidecar_dict
    from draftsync.catalog import SourceSighting, VideoRecord

    path = os.fsdecode(b"/srv/inbox/Caf\xe9 \xff.mp4")
    v = VideoRecord(hash="blake3:" + "a" * 64, size=3, archive_path="a.mp4", capture_time="2026-01-01T00:00:00",
                    capture_source="mtime", label="camera", media=None, probe_error=None, first_seen=1.0,
                    archived_at=1.0, sources=[SourceSighting(path, 3, 10**19, 1, 2, "/srv/inbox", 1.0, 5)])  # fmt: skip
    d = sidecar_dict(v)
    text = json.dumps(d, ensure_ascii=False).encode("utf-8")  # what write_json_atomic writes
    src = json.loads(text)["sources"][0]
    assert src["path"] == "/srv/inbox/Caf\\xe9 \\xff.mp4" and src["path_bytes"] == os.fsencode(path).hex()
    back = record_from_sidecar(json.loads(text), "a.mp4").sources[0]
    assert (back.path, back.mtime_ns, back.ctime_ns) == (path, 10**19, 5)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"size": "huge"}, "bad value"),
        ({"size": -1}, "bad value"),
        ({"hash": "md5:abc"}, "not a blake3 digest"),
        ({"sources": [{"size": 1}]}, "bad value"),
        ({"sources": "nope"}, "bad value"),
        ({"media": "nope"}, "'media' is not an object"),
        ({"first_seen": "yesterday"}, "bad value"),
    ],
)
def test_a_sidecar_with_a_bad_value_is_refused_with_a_reason(change: dict[str, object], words: str) -> None:
    from draftsync.archive import record_from_sidecar

    good = {"hash": "blake3:" + "a" * 64, "size": 3, "capture_time": "2026-01-01T00:00:00", "label": "camera"}
    record_from_sidecar(good, "a.mp4")
    with pytest.raises(ValueError, match=words):
        record_from_sidecar(good | change, "a.mp4")
