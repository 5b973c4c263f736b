"""The render stage end to end, checked with a real probe (PyAV) of the output."""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import re
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import ffmpeg, make_clip

from pipeline.config import RenderConfig
from pipeline.output import scores_path
from pipeline.stages.render import run_render
from pipeline.video import iter_frames

FAST = RenderConfig(scale=2, preset="ultrafast", segment_frames=20, cluster_batch_frames=8)


def streams(path: Path) -> dict:
    """Codec, pixel format, frame count and durations of an output file, from PyAV."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.demux(v) if _.size)
        out = {"format": c.format.name, "codec": v.codec_context.name,
               "pix_fmt": v.codec_context.pix_fmt, "frames": frames,
               "rate": v.average_rate, "size": (v.codec_context.width, v.codec_context.height),
               "video_s": float(v.duration * v.time_base),
               "audio_s": [float(a.duration * a.time_base) for a in c.streams.audio]}
    return out


def render(video: Path | str, index: Path, tmp: Path, config: RenderConfig = FAST,
           name: str = "out.mp4", **kw):
    out = tmp / name
    report = run_render(str(video), index, out, config, tmp / "cache", progress=False, **kw)
    return out, report


def test_output_is_h264_with_source_frames_and_audio(clip_with_audio: Path, tile_index: Path,
                                                     tmp_path: Path) -> None:
    out, report = render(clip_with_audio, tile_index, tmp_path)
    s = streams(out)
    assert "mp4" in s["format"] and s["codec"] == "h264" and s["pix_fmt"] == "yuv420p"
    assert s["frames"] == 50 and s["rate"] == 25
    assert abs(s["video_s"] - 2.0) <= 1 / 25
    assert len(s["audio_s"]) == 1 and abs(s["audio_s"][0] - s["video_s"]) <= 1 / 25
    assert s["size"] == (320, 256)  # 160x120 at x2 = 320x240, rounded up to 32-px cells
    assert report.rendered == 50 and report.audio
    with open(out, "rb") as f:  # +faststart: the moov atom comes before the media data
        head = f.read(4096)
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or
                                         head.find(b"moov") < head.find(b"mdat"))


def test_rerun_with_nothing_changed_does_nothing(clip_with_audio: Path, tile_index: Path,
                                                 tmp_path: Path) -> None:
    out, _ = render(clip_with_audio, tile_index, tmp_path)
    mtime = out.stat().st_mtime_ns
    _, again = render(clip_with_audio, tile_index, tmp_path)
    assert again.up_to_date and again.rendered == 0 and out.stat().st_mtime_ns == mtime
    out.unlink()  # output gone: segments are reused, only the mux is redone
    _, third = render(clip_with_audio, tile_index, tmp_path)
    assert third.rendered == 0 and third.segments_cached == 3 and out.is_file()


def test_source_without_audio_gives_video_only(tile_index: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    clip = make_clip(tmp_path / "silent.mp4", audio=False, seconds=1)
    out, report = render(clip, tile_index, tmp_path)
    s = streams(out)
    assert s["audio_s"] == [] and s["frames"] == 25 and not report.audio
    assert any("no audio track" in r.getMessage() for r in caplog.records)


def test_odd_frame_size(tile_index: Path, tmp_path: Path) -> None:
    clip = tmp_path / "odd.mkv"  # lossless FFV1 keeps the odd size (yuv420p cannot)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=642x360:rate=25:duration=0.4", "-vf",
           "format=yuv444p,crop=641:359", "-c:v", "ffv1", clip)
    assert next(iter_frames(clip)).shape == (359, 641, 3)
    out, _ = render(clip, tile_index, tmp_path, RenderConfig(scale=1, preset="ultrafast"))
    s = streams(out)
    assert s["size"] == (672, 384) and s["frames"] == 10  # ceil(641/32), ceil(359/32) cells


def test_rotation_metadata_is_applied(tile_index: Path, tmp_path: Path) -> None:
    plain = make_clip(tmp_path / "plain.mp4", size="160x96", seconds=0.4, audio=False)
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", plain, "-c", "copy", rotated)
    out, _report = render(rotated, tile_index, tmp_path, RenderConfig(scale=1, preset="ultrafast"))
    assert streams(out)["size"] == (96, 160)  # portrait: 96x160 source, 32-px cells
    frame = next(iter_frames(rotated))
    assert frame.shape == (160, 96, 3)


def test_variable_frame_rate_source_stays_in_sync(tile_index: Path, tmp_path: Path) -> None:
    vfr = tmp_path / "vfr.mkv"
    # 30 fps source keeping 2 of every 3 frames for the first second: irregular timestamps
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30:duration=3", "-f", "lavfi",
           "-i", "sine=frequency=300:sample_rate=48000:duration=3",
           "-vf", r"select='gt(n\,30)+not(eq(mod(n\,3)\,2))'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", vfr)
    with av.open(str(vfr)) as c:
        pts = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
    assert len(set(np.diff(sorted(pts)))) > 1, "the source should be variable-rate"
    out, _ = render(vfr, tile_index, tmp_path)
    s = streams(out)
    assert abs(s["video_s"] - 3.0) <= 1.5 / float(s["rate"])
    assert abs(s["audio_s"][0] - s["video_s"]) <= 1.5 / float(s["rate"])
    assert s["frames"] == round(s["video_s"] * s["rate"])


def test_preview_range_cuts_video_and_audio(clip_with_audio: Path, tile_index: Path,
                                            tmp_path: Path) -> None:
    out, _ = render(clip_with_audio, tile_index, tmp_path, start_s=0.4, duration_s=1.0)
    s = streams(out)
    assert s["frames"] == 25 and abs(s["audio_s"][0] - 1.0) <= 1 / 25
    out, _report = render(clip_with_audio, tile_index, tmp_path, name="b.mp4", max_frames=7)
    assert streams(out)["frames"] == 7


@pytest.mark.parametrize(("frames", "segment_frames"), [(33, 32), (21, 10)])
def test_lengths_that_leave_a_frame_over_at_a_preset_with_b_frames(
        frames: int, segment_frames: int, clip_with_audio: Path, tile_index: Path,
        tmp_path: Path) -> None:
    """33 frames in segments of 32 (as the default cut a 33-frame job before segments
    were 64 frames at least), 21 in segments of 10: the frame over is painted with the
    segment before (a 1-frame segment after one with B-frames made a file whose frame
    count and duration the join refused)."""
    config = RenderConfig(scale=2, preset="slow", segment_frames=segment_frames)
    out, report = render(clip_with_audio, tile_index, tmp_path, config, max_frames=frames)
    s = streams(out)
    assert s["frames"] == frames and report.rendered == frames
    assert abs(s["video_s"] - frames / 25) <= 1 / 25 / 2
    assert abs(s["audio_s"][0] - s["video_s"]) <= 1 / 25


@pytest.mark.parametrize("case", ["missing", "corrupt", "truncated", "truncated_faststart",
                                  "not_video"])
def test_bad_video_is_a_clear_error_and_writes_nothing(case: str, clip_with_audio: Path,
                                                       tile_index: Path, tmp_path: Path,
                                                       run_cli, monkeypatch) -> None:
    monkeypatch.setenv("MOSAIC_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.mp4"
    if case == "corrupt":
        bad.write_bytes(os.urandom(20000))
    elif case == "truncated":  # moov atom at the end: cut off
        plain = tmp_path / "plain.mp4"
        ffmpeg("-i", clip_with_audio, "-c", "copy", plain)
        bad.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    elif case == "truncated_faststart":  # index first, media data cut short
        fast = tmp_path / "fast.mp4"
        ffmpeg("-i", clip_with_audio, "-c", "copy", "-movflags", "+faststart", fast)
        bad.write_bytes(fast.read_bytes()[: int(fast.stat().st_size * 0.6)])
    elif case == "not_video":
        bad = tmp_path / "notes.mp4"
        bad.write_text("hello\n" * 100)
    out = tmp_path / "out.mp4"
    code, _, err = run_cli("render", bad, "--index", tile_index, "--out", out, "--preset",
                           "ultrafast")
    assert code == 1 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".out.mp4*"))


def test_missing_index_is_a_clear_error(clip_with_audio: Path, tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("render", clip_with_audio, "--index", tmp_path / "nope", "--out",
                           tmp_path / "o.mp4")
    assert code == 1 and "run `mosaic index` first" in err and not (tmp_path / "o.mp4").exists()


def test_url_input_through_real_ytdlp(clip_with_audio: Path, tile_index: Path,
                                      tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    (served / "clip.mp4").write_bytes(clip_with_audio.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
        out, _report = render(url, tile_index, tmp_path)
        s = streams(out)
        assert s["frames"] == 50 and len(s["audio_s"]) == 1
        downloads = list((tmp_path / "cache" / "downloads").rglob("*.mp4"))
        assert len(downloads) == 1
        mtime = downloads[0].stat().st_mtime_ns
        render(url, tile_index, tmp_path, name="again.mp4")  # cached: not fetched again
        assert downloads[0].stat().st_mtime_ns == mtime
        with pytest.raises(Exception, match="download failed"):
            render(url.replace("clip.mp4", "missing.mp4"), tile_index, tmp_path, name="x.mp4")
    finally:
        server.shutdown()


def _still(path: Path, seconds: float, dark: bool | None = None) -> Path:
    """A still picture (testsrc2's first frame) held for ``seconds``, 25 fps, no audio;
    ``dark``/not ``dark`` squeeze its levels into 0..127 or 128..255."""
    vf = "select=eq(n\\,0),loop=loop=-1:size=1,fps=25"
    if dark is not None:
        level = "val/2" if dark else "val/2+128"
        vf += f",lutrgb=r={level}:g={level}:b={level}"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-vf", vf, "-t", str(seconds),
           "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv444p", path)
    return path


def test_static_source_has_zero_churn_across_segments(tile_index: Path, tmp_path: Path) -> None:
    clip = _still(tmp_path / "still.mkv", 1.2)  # 30 frames, segments of 10
    config = RenderConfig(scale=2, preset="ultrafast", segment_frames=10, score_every=1)
    assert config.matching == "nearest" and config.carry_tiles
    out, report = render(clip, tile_index, tmp_path, config)
    assert report.scores["frames"] == 30
    assert report.scores["static_cells"] == 29 * report.grid[0] * report.grid[1]
    assert report.scores["churn"] == 0 and report.scores["flicker"] == 0
    assert report.scores["identical_neighbours"] == 0
    chunks = sorted((tmp_path / "cache" / "plans").glob("*/chunk-*.npz"))
    assert len(chunks) == 3
    ids = [np.load(t)["end_ids"] for t in chunks]
    assert (ids[0] == ids[1]).all() and (ids[1] == ids[2]).all()  # no reshuffle at boundaries
    written = json.loads(scores_path(out).read_text())
    assert written["scores"]["churn"] == 0


def test_noisy_still_source_does_not_churn(tile_index: Path, tmp_path: Path,
                                          run_cli) -> None:
    """A static scene with sensor-like noise (temporal, every pixel, every frame): the
    activity mask marks most cells, but their colour does not move, so their tiles stay
    (churn at most 0.02 by tile id, and from the pixels as `mosaic score` sees them)."""
    clip = tmp_path / "noisy.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-vf",
           "select=eq(n\\,0),loop=loop=-1:size=1,fps=25,noise=c0s=14:c1s=8:c2s=8:allf=t",
           "-t", "1.6", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt",
           "yuv444p", clip)
    config = RenderConfig(scale=2, preset="ultrafast", segment_frames=20, alpha=0)
    out, report = render(clip, tile_index, tmp_path, config)
    assert report.active_share < 1  # the cells are not all re-decided every frame
    scored = report.scores["frames"]  # frames 0, 4, ... 36: each against the one before
    assert scored == 10 and report.scores["scored_every"] == 4
    assert report.scores["static_cells"] > 0.9 * (scored - 1) * report.grid[0] * report.grid[1]
    assert report.scores["churn"] <= 0.02
    code, text, _ = run_cli("score", clip, out, "--scale", "2", "-q")
    assert code == 0 and json.loads(text)["churn"] <= 0.02
    # the noise is real: the activity mask marks most cells in most frames
    from pipeline.activity import ActivityTracker
    from pipeline.grid import make_grid

    tracker = ActivityTracker(make_grid(120, 160, (32, 32), 2), config.activity_threshold)
    marked = [tracker.update(f).mean() for f in iter_frames(clip)][1:]
    assert np.median(marked) > 0.5


def test_scene_cut_resets_the_state(tile_index: Path, tmp_path: Path) -> None:
    a = _still(tmp_path / "a.mkv", 0.4, dark=True)  # every pixel changes at the cut
    b = _still(tmp_path / "b.mkv", 0.4, dark=False)
    ab = tmp_path / "ab.mkv"
    ffmpeg("-i", a, "-i", b, "-filter_complex", "[0:v][1:v]concat=n=2:v=1", "-c:v",
           "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv444p", ab)
    config = RenderConfig(scale=2, preset="ultrafast", segment_frames=100)
    (tmp_path / "ab").mkdir()
    (tmp_path / "b").mkdir()
    render(ab, tile_index, tmp_path / "ab", config)  # 20 frames, cut at frame 10
    render(b, tile_index, tmp_path / "b", config)  # the second scene alone, from a cold start
    ab_tiles = np.load(next((tmp_path / "ab").rglob("chunk-00000.npz")))["end_ids"]
    b_tiles = np.load(next((tmp_path / "b").rglob("chunk-00000.npz")))["end_ids"]
    np.testing.assert_array_equal(ab_tiles, b_tiles)  # after the cut: as from a cold start
    no_cut = RenderConfig(scale=2, preset="ultrafast", segment_frames=100, scene_cut=1.0)
    (tmp_path / "nocut").mkdir()
    render(ab, tile_index, tmp_path / "nocut", no_cut)
    kept = np.load(next((tmp_path / "nocut").rglob("chunk-00000.npz")))["end_ids"]
    assert (kept != b_tiles).any()  # without the cut rule, hysteresis keeps some old tiles


def test_several_audio_tracks_first_by_default(tile_index: Path, tmp_path: Path) -> None:
    clip = tmp_path / "two.mp4"  # track 0 at 48 kHz, track 1 at 22.05 kHz
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1", "-f", "lavfi",
           "-i", "sine=frequency=440:sample_rate=48000:duration=1", "-f", "lavfi", "-i",
           "sine=frequency=880:sample_rate=22050:duration=1", "-map", "0", "-map", "1",
           "-map", "2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", clip)

    def rate_of(out: Path) -> int:
        with av.open(str(out)) as c:
            assert len(c.streams.audio) == 1
            return c.streams.audio[0].codec_context.sample_rate

    out, _ = render(clip, tile_index, tmp_path, name="first.mp4")
    assert rate_of(out) == 48000
    second = RenderConfig(scale=2, preset="ultrafast", audio_stream=1)
    out, _ = render(clip, tile_index, tmp_path, second, name="second.mp4")
    assert rate_of(out) == 22050
    with pytest.raises(Exception, match=r"render\.audio_stream: 2 asked"):
        render(clip, tile_index, tmp_path, RenderConfig(audio_stream=2), name="x.mp4")


def test_failing_encoder_is_a_clear_error(clip_with_audio: Path, tile_index: Path,
                                          tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out.mp4"  # no NVIDIA GPU here: ffmpeg's nvenc cannot open
    code, _, err = run_cli("render", clip_with_audio, "--index", tile_index, "--out", out,
                           "--scale", "2", "--set", "render.encoder=h264_nvenc", "-q")
    assert code == 1 and "Traceback" not in err
    # one line naming the segment and the cause (the 50 frames are one segment)
    assert re.match(r"error: segment 0 \(frames 0-49\): encoding ", err), err
    assert "ffmpeg failed" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
