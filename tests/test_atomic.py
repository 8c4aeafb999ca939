"""atomic: files appear whole or not at all, with their mode from the first moment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from draftsync.atomic import AtomicFile, write_atomic


def test_a_secret_file_is_never_readable_by_others(tmp_path: Path) -> None:
    seen_modes: list[int] = []
    real_link = os.link

    def spy(src: str | Path, dst: str | Path, **kw: object) -> None:
        seen_modes.append(stat.S_IMODE(os.stat(src).st_mode))
        real_link(src, dst)

    old = os.umask(0)
    try:
        os.link = spy  # type: ignore[assignment]
        write_atomic(tmp_path / "token.json", b"{}", mode=0o600, replace=False)
    finally:
        os.link = real_link
        os.umask(old)
    assert seen_modes == [0o600]
    assert stat.S_IMODE((tmp_path / "token.json").stat().st_mode) == 0o600


def test_replace_swaps_whole_files_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    write_atomic(p, b"one")
    write_atomic(p, b"two")
    assert p.read_bytes() == b"two" and [x.name for x in tmp_path.iterdir()] == ["a.json"]


def test_never_replace_refuses_an_existing_name(tmp_path: Path) -> None:
    p = tmp_path / "v.mp4"
    p.write_bytes(b"original")
    with pytest.raises(FileExistsError):
        write_atomic(p, b"other", replace=False)
    assert p.read_bytes() == b"original" and [x.name for x in tmp_path.iterdir()] == ["v.mp4"]


def test_mkdir_false_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        AtomicFile(tmp_path / "not-mounted", mkdir=False)
    assert not (tmp_path / "not-mounted").exists()
