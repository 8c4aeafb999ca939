"""archive: the path template, labels, atomic writes that never replace, sidecars, temp sweeping."""

from __future__ import annotations

import errno
import os
import subprocess
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
from draftsync.config import ArchiveConfig, LabelRule
from draftsync.errors import ArchiveFull
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
       layout=st.sampled_from([LAYOUT, "{label}/{stem}_{hash8}{ext}", "{label}/{year}/{orientation}/{date} {stem} {hash}{ext}"]))  # fmt: skip
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
    assert not rel.endswith(".json")


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


@pytest.fixture
def tiny_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 1 MiB tmpfs if this machine lets us mount one (root), else None."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        yield None
        return
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_raises_archive_full_and_leaves_nothing(tiny_fs: Path | None, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    target = tiny_fs if tiny_fs is not None else tmp_path / "fake"
    if tiny_fs is None:  # no mount here: inject the kernel's answer instead
        real_write = os.write

        def full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", full)
        del real_write
    with pytest.raises(ArchiveFull, match="full"), ArchiveFile(target / "2026") as f:
        for _ in range(4):
            f.write(b"\x01" * 512 * 1024)
    leftovers = [p for p in target.rglob("*") if p.is_file()]
    assert leftovers == []
