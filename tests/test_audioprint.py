"""audioprint: the same sound keeps its landmarks through re-encoding, another sample rate and a trimmed
start (and the offset comes out right); another sound shares almost none; silence is no print."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from draftsync.audioprint import AudioPrint, fingerprint_stream, match_audio, segments
from tests import corpus


def print_of_file(path: Path) -> AudioPrint | None:
    with av.open(str(path)) as c:
        return fingerprint_stream(c, c.streams.audio[0], c.duration / 1e6)


def with_sound(tmp_path: Path, name: str, sound: np.ndarray, rate: int = 48000) -> Path:
    frames = [np.full((90, 160, 3), 100, np.uint8)] * int(len(sound) / corpus.AUDIO_RATE * corpus.FPS)
    return corpus.encode(tmp_path / name, frames, sound, corpus.Enc(audio_rate=rate))


@pytest.fixture(scope="module")
def prints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, AudioPrint | None]:
    d = tmp_path_factory.mktemp("sound")
    tune, other = corpus.melody(1, seconds=8), corpus.melody(2, seconds=8)
    trim = int(1.3 * corpus.AUDIO_RATE)
    files = {
        "tune": with_sound(d, "tune.mp4", tune),
        "tune_44k_trimmed": with_sound(d, "trimmed.mp4", tune[trim:], rate=44100),
        "quieter_noisier": with_sound(
            d, "quiet.mp4", (0.4 * tune + 0.02 * np.random.default_rng(0).standard_normal(len(tune))).astype(np.float32)
        ),
        "other": with_sound(d, "other.mp4", other),
        "silence": with_sound(d, "silence.mp4", np.zeros(8 * corpus.AUDIO_RATE, np.float32)),
    }
    return {k: print_of_file(p) for k, p in files.items()}


def test_the_same_sound_matches_through_resampling_and_a_trim(prints: dict) -> None:
    a, b = prints["tune"], prints["tune_44k_trimmed"]
    m = match_audio(a, b)
    assert m.score >= 0.3 and m.shared >= 20
    assert m.offset == pytest.approx(-1.3, abs=0.07)  # b's time = a's time - 1.3 s
    q = match_audio(a, prints["quieter_noisier"])
    assert q.score >= 0.3 and abs(q.offset) < 0.07


def test_another_sound_shares_almost_nothing(prints: dict) -> None:
    m = match_audio(prints["tune"], prints["other"], at=0.0)
    assert m.expected >= 50 and m.score < 0.05


def test_silence_is_no_print(prints: dict) -> None:
    assert prints["silence"] is None


@pytest.mark.parametrize(
    ("duration", "first", "count", "total_at_most"),
    [
        (6.0, (0.0, 6.0), 1, 6.0),
        (16.0, (0.0, 16.0), 1, 16.0),
        (60.0, (0.0, 3.0), 4, 12.0),
        (7200.0, (0.0, 3.0), 30, 90.0),
    ],
)
def test_long_tracks_are_read_in_segments(duration: float, first: tuple, count: int, total_at_most: float) -> None:
    segs = segments(duration)
    assert segs[0] == first and len(segs) == count
    assert sum(b - a for a, b in segs) <= total_at_most
    assert all(b <= duration for _, b in segs)


def test_prints_round_trip(prints: dict) -> None:
    p = prints["tune"]
    for back in (AudioPrint.unpack(p.pack()), AudioPrint.from_json(json.loads(json.dumps(p.to_json())))):
        assert np.array_equal(back.hashes, p.hashes) and np.array_equal(back.times, p.times)
        assert np.allclose(back.covered, p.covered, atol=1e-3)
