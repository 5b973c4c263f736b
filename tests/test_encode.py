"""Encoding: encoder arguments from the options, the frame writers, the memory model."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.encode import (
    FrameWriter,
    SegmentEncoder,
    bgr_to_i420,
    codec_args,
    encoder_args,
    encoder_bytes,
    mosaic_tuning,
    x264_lookahead,
)
from pipeline.errors import FFmpegError, VideoError
from pipeline.execute import choose_workers, worker_bytes
from pipeline.processes import PIPE_BYTES
from pipeline.video import iter_frames, probe


def test_encoder_args_per_encoder() -> None:
    assert encoder_args("libx264", 20, "slow") == ["-c:v", "libx264", "-preset", "slow",
                                                    "-crf", "20"]
    assert encoder_args("h264_nvenc", 23, "slow", "-bf 2")[:4] == ["-c:v", "h264_nvenc",
                                                                  "-preset", "p5"]
    assert encoder_args("h264_nvenc", 23, "slow", "-bf 2")[-2:] == ["-bf", "2"]
    assert encoder_args("mpeg4", 5, "slow") == ["-c:v", "mpeg4"]


def test_x264_lookahead_is_shortened_only_for_very_large_frames() -> None:
    assert x264_lookahead(2560 * 1920, "slow") is None  # the preset's own 50 fit
    assert x264_lookahead(5120 * 2880, "ultrafast") is None  # no lookahead to shorten
    short = x264_lookahead(5120 * 2880, "slow")
    assert short is not None and 10 <= short < 50
    choice = choose_workers(5120 * 2880, "libx264", "slow", cores=2, available=22 << 30)
    assert choice.lookahead == short
    # the shorter lookahead is part of the memory estimate (about 1.3 GB less)
    full = worker_bytes(5120 * 2880, "libx264", "slow", choice.threads)
    assert full - choice.bytes_per_worker > 1 << 30
    assert encoder_bytes(5120 * 2880, "libx264", "slow", 1, short) < encoder_bytes(
        5120 * 2880, "libx264", "slow", 1)
    config = load_config().render
    assert codec_args(config, 3, short)[-2:] == ["-rc-lookahead", str(short)]
    assert codec_args(config, 3, None)[-2:] == ["-threads", "3"]
    own = load_config(None, ["render.encoder_options=-x264-params rc-lookahead=40"]).render
    assert "-rc-lookahead" not in codec_args(own, 3, short)  # the user's choice stands


def test_mosaic_tuning_applies_to_the_slow_presets_and_yields_to_the_users_options() -> None:
    def args(*sets: str) -> list[str]:
        return codec_args(load_config(None, list(sets)).render, 2, None)

    tuned = ["-x264-params", "me=dia:ref=1:subme=6:trellis=1"]
    assert args()[6:8] == tuned  # the default: preset slow, tuned
    for preset in ("fast", "medium", "slower", "veryslow", "placebo"):
        assert args(f"render.preset={preset}")[6:8] == tuned
    for preset in ("ultrafast", "superfast", "veryfast", "faster"):  # cheaper already
        assert "-x264-params" not in args(f"render.preset={preset}")
    assert "-x264-params" not in args("render.encoder_tuning=preset")
    assert "-x264-params" not in args("render.encoder=libx265")
    # the user's x264 options come after the tuning's, so theirs win in x264
    user = args("render.encoder_options=-x264-params ref=4:rc-lookahead=10")
    assert user[user.index("-x264-params") + 1] == ("me=dia:ref=1:subme=6:trellis=1:"
                                                     "ref=4:rc-lookahead=10")
    assert user.count("-x264-params") == 1
    # an ffmpeg option that x264's params would override: no tuning at all
    for own in ("-refs 3", "-refs:v 3", "-subq 9", "-trellis 2", "-me_method umh",
                "-x264opts ref=3"):
        assert "me=dia" not in " ".join(args(f"render.encoder_options={own}")), own
    config = load_config().render
    assert mosaic_tuning(config, ["-c:v", "libx264"]) == ["-c:v", "libx264", *tuned]


def test_mosaic_tuning_reaches_x264(tmp_path: Path) -> None:
    """x264 writes the options it ran with into the stream: the tuning's are there."""
    out = tmp_path / "tuned.mp4"
    writer = FrameWriter(out, 64, 48, Fraction(25), codec_args(load_config().render, 1))
    for f in _frames(4):
        writer.write(f)
    writer.close()
    used = out.read_bytes()
    for part in (b" ref=1 ", b" me=dia ", b" subme=6 ", b" trellis=1 "):
        assert part in used, part
    plain = tmp_path / "preset.mp4"
    writer = FrameWriter(plain, 64, 48, Fraction(25), codec_args(
        load_config(None, ["render.encoder_tuning=preset"]).render, 1))
    for f in _frames(4):
        writer.write(f)
    writer.close()
    assert b" subme=8 " in plain.read_bytes() and b" me=dia " not in plain.read_bytes()


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [np.repeat(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), 8, 0).repeat(8, 1)
            for _ in range(n)]


def test_frame_writer_writes_every_frame_at_the_exact_rate(tmp_path: Path) -> None:
    out = tmp_path / "w.mp4"
    writer = FrameWriter(out, 64, 48, Fraction(30000, 1001), ["-c:v", "libx264", "-qp", "0"])
    frames = _frames(5)
    for f in frames:
        writer.write(f)
    writer.close()
    info = probe(out)
    assert (info.width, info.height, info.frames, info.rate) == (64, 48, 5,
                                                                 Fraction(30000, 1001))
    decoded = list(iter_frames(out))
    # lossless x264 of I420: only the colour subsampling differs from the BGR frames
    assert len(decoded) == 5
    assert np.abs(decoded[0].astype(int) - frames[0]).mean() < 12


def test_frame_writer_refuses_odd_sizes_and_reports_ffmpeg_failures(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="both sides must be even"):
        FrameWriter(tmp_path / "odd.mp4", 63, 48, Fraction(25), ["-c:v", "libx264"])
    writer = FrameWriter(tmp_path / "bad.mp4", 64, 48, Fraction(25), ["-c:v", "no-such-codec"])
    with pytest.raises(FFmpegError, match=r"bad\.mp4"):
        for f in _frames(50):
            writer.write(f)
        writer.close()


def test_segment_encoder_renames_when_finished_and_leaves_nothing_when_aborted(
        tmp_path: Path) -> None:
    enc = SegmentEncoder(tmp_path, "seg-00003.mp4", 64, 48, Fraction(25), ["-c:v", "libx264"])
    assert enc.tmp.name.startswith(".seg-00003.") and enc.tmp.name.endswith(".mp4.tmp")
    for f in _frames(4):
        enc.put(bgr_to_i420(f, enc.buffer()))
    enc.finish(tmp_path / "seg-00003.mp4")
    enc.abort()
    assert probe(tmp_path / "seg-00003.mp4").frames == 4
    aborted = SegmentEncoder(tmp_path, "seg-00004.mp4", 64, 48, Fraction(25),
                             ["-c:v", "libx264"])
    aborted.put(bgr_to_i420(_frames(1)[0], aborted.buffer()))
    aborted.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg-00003.mp4"]


@pytest.mark.parametrize("source", [(48, 64), (47, 63)])
def test_the_blend_on_i420_planes_is_the_blend_then_i420(source: tuple[int, int]) -> None:
    """blend_i420 blends the frame's planes into the mosaic's I420: within two levels of
    blending in BGR and converting in luma, a few in colour (the frame's own colour is at
    half size when its sides are even), for an even or odd frame size; alpha 0 is exactly
    the mosaic's I420."""
    import cv2

    from pipeline.compose import blend, blend_i420
    from pipeline.encode import bgr_to_i420

    rng = np.random.default_rng(9)
    mosaic = cv2.resize(rng.integers(0, 256, (12, 16, 3), np.uint8), (256, 192),
                        interpolation=cv2.INTER_NEAREST)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (*source, 3), np.uint8), (0, 0), 3)
    scratch = np.empty_like(mosaic)
    for alpha in (0.0, 0.2, 0.5):
        got = blend_i420(mosaic, frame, alpha, np.empty((288, 256), np.uint8), scratch)
        want = bgr_to_i420(blend(mosaic, frame, alpha, np.empty_like(mosaic)))
        if alpha == 0:
            assert np.array_equal(got, want)
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff[:192].max() <= 2 and diff[192:].max() <= 4, (alpha, diff.max())
        assert diff.mean() < 0.5, (alpha, diff.mean())


def test_the_encoders_pipe_holds_a_mebibyte(tmp_path: Path) -> None:
    """The frames go to the encoder in turns of 1 MiB where Linux allows it (the default
    64 KiB pipe costs about 2 CPU-ms more a 2560x1920 frame: scripts/bench_pipe.py), and
    the file is whole."""
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("no F_GETPIPE_SZ here")
    limit = Path("/proc/sys/fs/pipe-max-size")
    if limit.exists() and int(limit.read_text()) < PIPE_BYTES:
        pytest.skip("this system caps pipes under 1 MiB")
    out = tmp_path / "wide.mp4"
    writer = FrameWriter(out, 64, 48, Fraction(25), ["-c:v", "libx264", "-preset", "ultrafast"])
    assert fcntl.fcntl(writer._proc.stdin.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_BYTES
    for f in _frames(3):
        writer.write(f)
    writer.close()
    assert probe(out).frames == 3
