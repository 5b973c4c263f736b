"""Output safety and containers: checked before any work is done."""

from __future__ import annotations

import os
from pathlib import Path

import av
import pytest
from helpers import ffmpeg, make_clip

from pipeline.errors import OutputError
from pipeline.output import (
    audio_args,
    check_output,
    container_for,
    default_output,
    mux_args,
    scores_path,
)


def test_output_that_is_an_input_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    src = tmp_path / "src.mp4"
    src.write_bytes(b"precious")
    index_tiles = tmp_path / "ix" / "tiles.npy"
    index_tiles.parent.mkdir()
    index_tiles.write_bytes(b"tiles")
    (tmp_path / "link.mp4").symlink_to(src)
    os.link(src, tmp_path / "hard.mp4")
    monkeypatch.chdir(tmp_path)
    reads = [src, index_tiles]
    for out in ("./src.mp4", "src.mp4", str(src), "ix/../src.mp4", "link.mp4", "hard.mp4",
                "ix/tiles.npy"):
        with pytest.raises(OutputError, match="would overwrite"):
            check_output(out, reads)
    assert check_output("other.mp4", reads) == Path("other.mp4")
    assert src.read_bytes() == b"precious"
    # a relative input against an absolute OUT
    with pytest.raises(OutputError, match="would overwrite"):
        check_output(tmp_path / "src.mp4", ["./src.mp4"])


def test_output_directory_problems_are_found_first(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path, [])
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "no" / "o.mp4", [])
    assert check_output(tmp_path / "new" / "o.mp4", [], create_parent=True)
    assert (tmp_path / "new").is_dir() and list((tmp_path / "new").iterdir()) == []
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)  # enough for an ordinary user; root needs a read-only mount
    if os.geteuid() == 0:
        os.system(f"mount --bind -o ro {ro} {ro} 2>/dev/null")
    try:
        if not _is_read_only(ro):
            pytest.skip("cannot make a read-only directory here")
        with pytest.raises(OutputError, match="cannot write in"):
            check_output(ro / "o.mp4", [])
    finally:
        if os.geteuid() == 0:
            os.system(f"umount {ro} 2>/dev/null")
        ro.chmod(0o755)


def _is_read_only(path: Path) -> bool:
    try:
        (path / ".probe").write_bytes(b"")
    except OSError:
        return True
    (path / ".probe").unlink()
    return False


@pytest.mark.parametrize(("name", "encoder", "muxer"), [
    ("o.mp4", "libx264", "mp4"), ("O.MOV", "libx264", "mov"), ("o.mkv", "libx264", "matroska"),
    ("o.mkv", "ffv1", "matroska"), ("o.webm", "libvpx-vp9", "webm"),
    ("o.webm", "libaom-av1", "webm"), ("o.mp4", "some_future_encoder", "mp4")])
def test_container_from_extension(name: str, encoder: str, muxer: str) -> None:
    c = container_for(name, encoder)
    assert c.muxer == muxer and mux_args(c)[-2:] == ["-f", muxer]
    assert ("-movflags" in mux_args(c)) == (muxer in ("mp4", "mov"))


@pytest.mark.parametrize(("name", "encoder", "message"), [
    ("o.webm", "libx264", "webm file cannot hold h264"),
    ("o.webm", "some_future_encoder", "webm file cannot hold some_future_encoder"),
    ("o.mp4", "libvpx", "mp4 file cannot hold vp8"),
    ("o.avi", "libx264", "unknown output container '.avi'"),
    ("o", "libx264", "unknown output container '(no extension)'"),
    ("o.gif", "libx264", "use one of .mp4, .mov, .mkv, .webm")])
def test_impossible_containers_are_clear_errors(name: str, encoder: str, message: str) -> None:
    with pytest.raises(OutputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        container_for(name, encoder)


def test_audio_is_copied_or_reencoded_per_container() -> None:
    assert audio_args(container_for("o.mp4"), "aac") == ["-c:a", "copy"]
    assert audio_args(container_for("o.mp4"), "vorbis")[:2] == ["-c:a", "aac"]
    assert audio_args(container_for("o.mkv"), "vorbis") == ["-c:a", "copy"]
    assert audio_args(container_for("o.webm", "libvpx-vp9"), "aac")[:2] == ["-c:a", "libopus"]
    assert audio_args(container_for("o.webm", "libvpx-vp9"), "opus") == ["-c:a", "copy"]


@pytest.mark.parametrize("suffix", [".mkv", ".mov", ".webm"])
def test_mux_args_write_the_named_container(suffix: str, tmp_path: Path) -> None:
    """The muxer options, used by a real ffmpeg, give a file of that container."""
    clip = make_clip(tmp_path / "a.mp4", seconds=0.2)
    encoder = "libvpx-vp9" if suffix == ".webm" else "libx264"
    c = container_for(f"o{suffix}", encoder)
    out = tmp_path / f"o{suffix}"
    ffmpeg("-i", clip, "-c:v", encoder, *audio_args(c, "aac"), *mux_args(c), out)
    with av.open(str(out)) as f:
        assert c.muxer in f.format.name.split(",") or (c.muxer == "matroska"
                                                       and "matroska" in f.format.name)
        assert f.streams.video and f.streams.audio


def test_default_outputs_differ_for_same_named_inputs(tmp_path: Path) -> None:
    a = default_output(str(tmp_path / "a" / "clip.mp4"), tmp_path / "cache")
    b = default_output(str(tmp_path / "b" / "clip.mp4"), tmp_path / "cache")
    assert a != b and a.parent == b.parent == tmp_path / "cache" / "renders"
    assert a.name.startswith("clip-") and a.name.endswith("-mosaic.mp4")
    assert default_output(str(tmp_path / "a" / "clip.mp4"), tmp_path / "cache") == a
    u1 = default_output("https://example.com/v/clip.mp4?x=1", tmp_path)
    u2 = default_output("https://example.org/v/clip.mp4", tmp_path)
    assert u1 != u2 and u1.name.startswith("clip-")
    assert default_output("x.mkv", tmp_path, ".mkv").suffix == ".mkv"


def test_scores_files_are_distinct_per_output() -> None:
    names = {scores_path(f"o.{ext}") for ext in ("mp4", "mkv", "mov", "webm")}
    assert len(names) == 4 and scores_path("d/o.mkv") == Path("d/o.mkv.scores.json")


def test_joining_h264_segments_without_a_decoder_gives_the_same_bytes(tmp_path: Path) -> None:
    """The join opens H.264 segments without a decoder (the concat demuxer would decode
    each one's first frame): the output is byte for byte the one a decoding join makes,
    B-frames, audio and the cut included; a failed join still says what went wrong, in
    ffmpeg's words, without the whitelist's complaints."""
    from pipeline.errors import FFmpegError
    from pipeline.output import concat_and_mux
    from pipeline.video import probe

    source = make_clip(tmp_path / "src.mp4", seconds=3.0)
    segments = []
    for i in range(3):  # x264 at preset medium: B-frames, so the join's timing matters
        seg = tmp_path / f"seg-{i}.mp4"
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=25:duration=1,hue=h={60 * i}",
               "-c:v", "libx264", "-preset", "medium", "-pix_fmt", "yuv420p", seg)
        segments.append(seg)
    info, container = probe(source), container_for("o.mp4", "libx264")
    audio = info.audio[0]
    outs = {}
    for codec in ("", "h264"):
        out = tmp_path / f"joined-{codec or 'decoding'}.mp4"
        concat_and_mux(segments, out, info, audio, 0.2, 2.8, tmp_path, container, codec=codec)
        outs[codec] = out.read_bytes()
    assert outs["h264"] == outs[""]
    joined = probe(tmp_path / "joined-h264.mp4")
    assert joined.frames == 75 and len(joined.audio) == 1
    with pytest.raises(FFmpegError) as failed:  # the audio's file is gone
        concat_and_mux(segments, tmp_path / "bad.mp4", str(tmp_path / "gone.mp4"), audio,
                       0.0, 3.0, tmp_path, container, codec="h264")
    assert "whitelist" not in str(failed.value) and "gone.mp4" in str(failed.value)
    assert not (tmp_path / "bad.mp4").exists()
