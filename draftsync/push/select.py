"""Which archived videos may be pushed: TikTok's media rules, the owner's `[[push.select]]` rules, the
caption, and the duplicate rules (never a TikTok export, never a near-duplicate of something queued or
already pushed). Pure decisions over catalog records; nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from draftsync.catalog import Catalog, VideoRecord
from draftsync.config import SelectRule
from draftsync.push.machine import ACTIVE, State

_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".webm": "webm"}
_CODECS = {"h264", "hevc", "vp8", "vp9"}
MAX_VIDEO = 4_000_000_000  # spec A.3.1, the stricter reading

# States that make a video count as "queued or pushed" for the near-duplicate rule.
TAKEN = (State.QUEUED, *ACTIVE, State.IN_INBOX)


def media_problem(v: VideoRecord) -> str | None:
    """Why TikTok would certainly reject this video (spec A.7), or None if it may go."""
    ext = Path(v.archive_path).suffix.lower()
    if ext not in _CONTAINERS:
        return f"container {ext or '?'} is not MP4, MOV or WebM"
    m = v.media
    if not m:
        return f"not a decodable video ({v.probe_error or 'no media facts'})"
    if v.size > MAX_VIDEO:
        return f"{v.size} bytes is over TikTok's 4 GB limit"
    if m.get("video_codec") not in _CODECS:
        return f"video codec {m.get('video_codec')} is not H.264, H.265, VP8 or VP9"
    fps = m.get("fps")
    if fps is None or not 23 <= float(fps) <= 60:
        return f"frame rate {fps} is outside 23-60 fps"
    w, h = m.get("width"), m.get("height")
    if not w or not h or not (360 <= w <= 4096 and 360 <= h <= 4096):
        return f"picture size {w}x{h} is outside 360-4096 pixels"
    dur = m.get("duration")
    if dur is None or dur > 600:
        return f"duration {dur} s is over the 10-minute upload limit"
    # Minimum duration is unconfirmed; third parties say 3 s. Safe reading: a failed upload costs one
    # of five daily slots, so do not send what is likely to fail.
    if dur < 3:
        return f"duration {dur} s is under 3 s"
    return None


def matches(v: VideoRecord, rules: list[SelectRule]) -> bool:
    if not rules:
        return True
    m = v.media or {}
    for r in rules:
        if r.labels is not None and v.label not in r.labels:
            continue
        if r.orientation is not None and m.get("orientation") != r.orientation:
            continue
        dur = m.get("duration")
        if r.min_duration is not None and (dur is None or dur < r.min_duration):
            continue
        if r.max_duration is not None and (dur is None or dur > r.max_duration):
            continue
        if r.captured_after is not None and v.capture_time[:10] < r.captured_after[:10]:
            continue
        return True
    return False


def caption_for(template: str, v: VideoRecord, catalog: Catalog) -> str:
    sources = catalog.sources_of(v.hash)
    name = Path(sources[0]).name if sources else Path(v.archive_path).name
    fields = {"stem": Path(name).stem, "name": name, "label": v.label, "date": v.capture_time[:10]}
    try:
        text = template.format(**fields)
    except (KeyError, IndexError, ValueError):
        text = f"{fields['stem']} ({fields['date']})"
    return text.strip()[:2000] or fields["stem"]


def taken(catalog: Catalog) -> dict[str, str]:
    """hash -> state of every video queued, on its way or in the inbox."""
    return {r["hash"]: r["state"] for r in catalog.push_rows(tuple(TAKEN))}


def duplicate_problem(catalog: Catalog, v: VideoRecord, taken: dict[str, str]) -> str | None:
    """Why this video must not be pushed because of what it is or resembles, or None. `taken` holds the
    videos queued or pushed, including those this pass has just chosen. `near_dupes_of` names only
    copies of the same clip (a different take of a scene is merely similar and never blocks)."""
    if catalog.origin(v.hash) == "tiktok-export":
        return "a TikTok export (came out of TikTok; pushing it back would loop)"
    for other, sim in catalog.near_dupes_of(v.hash):
        if other in taken:
            o = catalog.video(other)
            return f"near-duplicate ({sim:.2f}) of {o.archive_path if o else other}, which is {taken[other]}"
    return None


@dataclass(frozen=True)
class Choice:
    video: VideoRecord
    problem: str | None  # None: it may be queued


def choose(catalog: Catalog, videos: list[VideoRecord], taken: dict[str, str], *, check_duplicates: bool = True,
           check_media: bool = True) -> list[Choice]:  # fmt: skip
    """Decide each video in order; one chosen early blocks its near-duplicates later in the same pass."""
    out = []
    for v in videos:
        problem = (duplicate_problem(catalog, v, taken) if check_duplicates else None) or (
            media_problem(v) if check_media else None)  # fmt: skip
        if problem is None:
            taken[v.hash] = State.QUEUED.value
        out.append(Choice(v, problem))
    return out
