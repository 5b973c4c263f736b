"""Output paths and containers: checks made before any work, so a render never destroys
an input, never writes a container other than the one asked for, and never fails only at
the very end for a reason known at the start.

* :func:`check_output` refuses an OUT that is (or links to) a file the job reads, that is
  inside an index or one of the tool's working folders (the cache's ``render/``,
  ``plans/``, ``downloads/``..., any folder carrying the tool's marker), that is an
  existing directory, an existing file of another kind (unless ``--force``), or whose
  directory is missing or not writable.
* :func:`container_for` picks the container from OUT's extension (mp4, mov, mkv, webm)
  and checks that it can hold the video and audio codecs; :func:`concat_and_mux` joins
  the encoded segments and adds the source's audio (:func:`mux_args`, :func:`audio_args`).
* :func:`default_output` names the default OUT of a source so that two sources with the
  same file name get different outputs; :func:`scores_path` names OUT's scores file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.cache import CACHE_WORK, atomic_output, digest_text, owned_ancestor, publish
from pipeline.download import is_url
from pipeline.encode import ENCODER_CODECS
from pipeline.errors import FFmpegError, OutputError, VideoError
from pipeline.video import AudioInfo, VideoInfo, probe, run_ffmpeg

# marked folders whose files the tool replaces or deletes: never an output's place
MANAGED_KINDS = frozenset({"index", "job", "plan", "download", "locks", "tmp", "dzi",
                           "faces"})
_KIND_NAMES = {"index": "a tile index", "job": "a render job of the cache",
               "plan": "a render plan of the cache", "download": "a download of the cache",
               "locks": "the cache's locks", "tmp": "the cache's temporary files",
               "dzi": "a Deep Zoom pyramid", "faces": "a face-tile folder"}


@dataclass(frozen=True)
class Container:
    """An output container: its name, ffmpeg muxer, and the codecs it may carry.

    ``video`` / ``audio`` are the codec names (as ffprobe and PyAV name them) that may be
    written into it; ``audio`` the ones that may be stream-copied from the source, the
    others being re-encoded to ``audio_encoder``.
    """

    name: str
    muxer: str
    video: frozenset[str]
    audio: frozenset[str]
    audio_encoder: str
    faststart: bool


_MP4_VIDEO = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4"})
CONTAINERS: dict[str, Container] = {
    ".mp4": Container("mp4", "mp4", _MP4_VIDEO,
                      frozenset({"aac", "mp3", "ac3", "eac3", "alac"}), "aac", True),
    ".mov": Container("mov", "mov", _MP4_VIDEO | {"prores"},
                      frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"}),
                      "aac", True),
    ".mkv": Container("mkv", "matroska",
                      _MP4_VIDEO | {"vp8", "prores", "ffv1"},
                      frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "vorbis", "flac",
                                 "dts", "truehd", "pcm_s16le", "pcm_s24le"}),
                      "aac", False),
    ".webm": Container("webm", "webm", frozenset({"vp8", "vp9", "av1"}),
                       frozenset({"opus", "vorbis"}), "libopus", False),
}

def container_for(out: str | Path, encoder: str = "libx264") -> Container:
    """The container of ``out`` from its extension, checked against the codecs.

    ``encoder`` is the ffmpeg video encoder (``render.encoder``); an encoder not in
    :data:`pipeline.encode.ENCODER_CODECS` is left to ffmpeg, except in webm, which takes only known
    VP8/VP9/AV1 encoders. (Audio never makes a container impossible: what it cannot carry
    is re-encoded, see :func:`audio_args`.) Raises :class:`OutputError` for another
    extension or a codec the container refuses.
    """
    suffix = Path(out).suffix.lower()
    container = CONTAINERS.get(suffix)
    if container is None:
        known = ", ".join(CONTAINERS)
        raise OutputError(f"{out}: unknown output container {suffix or '(no extension)'!r}; "
                          f"use one of {known}")
    codec = ENCODER_CODECS.get(encoder)
    if (codec is None and container.name == "webm") or (
            codec is not None and codec not in container.video):
        allowed = sorted(e for e, c in ENCODER_CODECS.items() if c in container.video)
        raise OutputError(f"{out}: a {container.name} file cannot hold "
                          f"{codec or encoder} video from render.encoder={encoder}; use "
                          f"an encoder such as {', '.join(allowed[:4])} or another container")
    return container


def mux_args(container: Container) -> list[str]:
    """ffmpeg output options that select ``container``'s muxer (and, for mp4/mov, put the
    index first so playback can start before the whole file is read)."""
    args = ["-movflags", "+faststart"] if container.faststart else []
    return [*args, "-f", container.muxer]


def audio_args(container: Container, audio_codec: str) -> list[str]:
    """ffmpeg options for the output's audio: copy ``audio_codec`` when the container can
    carry it, else re-encode to the container's audio codec."""
    if audio_codec in container.audio:
        return ["-c:a", "copy"]
    bitrate = "128k" if container.audio_encoder == "libopus" else "192k"
    return ["-c:a", container.audio_encoder, "-b:a", bitrate]


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (existing: same inode; else same real path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output(out: str | Path, reads: list[str | Path] | tuple[str | Path, ...] = (),
                 create_parent: bool = False, kind: str | None = None, force: bool = False,
                 cache_dir: str | Path | None = None) -> Path:
    """Check that writing ``out`` is safe and possible, before any work; returns it.

    Raises :class:`OutputError` when ``out`` resolves (through ``..``, ``./``, symbolic
    or hard links) to one of ``reads``, the files the job reads; when it lies inside a
    tile index or a working folder of the tool (:func:`managed_place`); when it is an
    existing directory, or (unless ``force``) an existing file that is not of ``kind``
    (``video``, ``image``, ``json``: :func:`existing_problem`); or when its directory is
    missing (unless ``create_parent``) or not writable (tried by creating and removing a
    temporary file there).
    """
    out = Path(out)
    for source in reads:
        if _same_file(out, Path(source)):
            raise OutputError(f"{out}: the output would overwrite {source}, which this job "
                              "reads; choose another --out")
    if (place := managed_place(out, cache_dir)) is not None:
        raise OutputError(f"{out}: is inside {place}, whose files this tool replaces or "
                          "deletes; choose another --out")
    if out.is_dir():
        raise OutputError(f"{out}: is a directory; give a file name such as "
                          f"{out / ('mosaic.mp4' if kind in (None, 'video') else 'out')}")
    if kind and not force and (problem := existing_problem(out, kind)):
        raise OutputError(f"{out}: exists and {problem}; choose another --out, or add "
                          "--force to replace it")
    parent = out.absolute().parent
    if not parent.is_dir():
        if not create_parent:
            raise OutputError(f"{out}: its directory {parent} does not exist")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{out}: cannot create its directory {parent}: "
                              f"{exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write in {parent}: {exc.strerror or exc}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return out


def managed_place(path: str | Path, cache_dir: str | Path | None = None) -> str | None:
    """What tool-managed place ``path`` lies in, in words ("a tile index /x/ix"), or
    None: a folder marked by the tool as an index or a working folder, a tile index made
    before markers existed (``manifest.json`` beside ``tiles.npy``), or one of the
    cache's working folders (:data:`pipeline.cache.CACHE_WORK`)."""
    real = Path(os.path.realpath(Path(path).absolute().parent))
    found = owned_ancestor(real, MANAGED_KINDS)
    if found is not None:
        return f"{_KIND_NAMES[found[1]]} ({found[0]})"
    for folder in (real, *real.parents):
        if (folder / "tiles.npy").is_file() and (folder / "manifest.json").is_file():
            return f"a tile index ({folder})"
    if cache_dir is not None:
        cache = Path(os.path.realpath(cache_dir))
        for name in CACHE_WORK:
            if real == cache / name or cache / name in real.parents:
                return f"the cache's working folder {cache / name}"
    return None


def _looks_like(head: bytes, kind: str) -> bool:
    if kind == "video":
        return head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip") or \
            head[:4] == b"\x1a\x45\xdf\xa3"  # ISO media (mp4, mov) or Matroska (mkv, webm)
    if kind == "image":
        return head[:3] == b"\xff\xd8\xff" or head[:8] == b"\x89PNG\r\n\x1a\n" or \
            head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    return True


def existing_problem(path: str | Path, kind: str) -> str | None:
    """Why the existing file ``path`` is not one this tool may replace with a ``kind``
    output (``video``, ``image``, ``json``: a scores file this tool wrote), or None
    (no file there, an empty file, or one of that kind)."""
    path = Path(path)
    try:
        if not path.exists() or path.stat().st_size == 0:
            return None
        if not path.is_file():
            return "is not a regular file"
        with open(path, "rb") as f:
            head = f.read(1 << 16 if kind == "json" else 16)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if kind == "json":
        try:
            data = json.loads(head)
        except ValueError:
            data = None
        if not (isinstance(data, dict) and "scores" in data):
            return "is not a scores file written by this tool"
        return None
    if not _looks_like(head, kind):
        return f"is not {'a video' if kind == 'video' else 'an image'} file"
    return None


def default_output(source: str, cache_dir: str | Path, suffix: str = ".mp4") -> Path:
    """``<cache>/renders/<name>-<digest>-mosaic<suffix>`` for a path or URL.

    ``<digest>`` is 8 hex digits of the source's absolute path (or the URL), so that two
    sources named alike (``a/clip.mp4``, ``b/clip.mp4``) get different outputs.
    """
    if is_url(source):
        key = source
        stem = Path(source.split("?", 1)[0].rstrip("/")).stem or "video"
    else:
        key = os.path.abspath(source)
        stem = Path(source).stem or "video"
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:60]
    return Path(cache_dir) / "renders" / f"{stem}-{digest_text(key)[:8]}-mosaic{suffix}"


def scores_path(out: str | Path) -> Path:
    """The scores file written beside ``out``: ``o.mkv`` -> ``o.mkv.scores.json`` (one per
    output file, so ``o.mkv`` and ``o.mov`` never share one)."""
    out = Path(out)
    return out.with_name(out.name + ".scores.json")


# The concat demuxer probes each file it opens, decoding its first frame: about 0.12
# CPU-s for a 5120x2880 H.264 segment, minutes for a film's thousands, all on the job's
# last task. A stream copy needs no decoder, and without one (an empty whitelist, per
# file) the join of H.264 segments is byte for byte the same (checked with ffmpeg 9.0
# and 5.1; BENCHMARKS.md, "The join at the end of a long render").
_NO_DECODER = "option codec_whitelist none"
_NO_DECODER_NOISE = ("not on whitelist", "Last message repeated")


def audio_inputs(path: str, audio: AudioInfo | None, start_s: float, duration_s: float,
                 container: Container) -> tuple[list[str], list[str]]:
    """The ffmpeg input options that read ``audio`` from ``path`` cut to the range (its
    second input, the video being the first) and the output options that map it into
    ``container``; none without audio."""
    if audio is None:
        return [], []
    seek = ["-ss", f"{start_s:.6f}"] if start_s > 0 else []
    return ([*seek, "-t", f"{duration_s:.6f}", "-i", path],
            ["-map", f"1:a:{audio.index}", *audio_args(container, audio.codec)])


def concat_and_mux(segments: list[Path], out: Path, source: VideoInfo | str,
                   audio: AudioInfo | None, start_s: float, duration_s: float, work: Path,
                   container: Container, check: Callable[[Path], None] | None = None,
                   codec: str = "") -> None:
    """Join encoded segments (stream copy) and add the source's audio, cut to the range.

    ``source`` is the input video, or the path of any file with the ``audio`` stream;
    ``codec`` the segments' video codec ("h264": they are opened without a decoder).

    The container (:func:`container_for`) decides the muxer and whether the audio is
    copied or re-encoded. The result is written to a unique temporary file, handed to
    ``check`` (which raises if it is not what was planned), and only then renamed over
    ``out``.
    """
    listing = work / "concat.txt"
    with atomic_output(listing, "w") as f:
        f.write("ffconcat version 1.0\n")
        for seg in segments:
            escaped = str(seg.resolve()).replace("'", "'\\''")
            f.write(f"file '{escaped}'\n")
            if codec == "h264":
                f.write(_NO_DECODER + "\n")
    inputs, maps = audio_inputs(source if isinstance(source, str) else source.path, audio,
                                start_s, duration_s, container)
    args = ["-f", "concat", "-safe", "0", "-i", str(listing), *inputs,
            "-map", "0:v:0", "-c:v", "copy", *maps, *mux_args(container)]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            run_ffmpeg([*args, str(tmp)], f"writing {out}")
        except FFmpegError as exc:  # its own words, without the decoder whitelist's
            raise FFmpegError(exc.what, "\n".join(
                line for line in exc.stderr.splitlines()
                if not any(noise in line for noise in _NO_DECODER_NOISE))) from None
        if check is not None:
            check(tmp)
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def check_joined(path: Path, out: Path, info: VideoInfo, count: int,
                  audio: AudioInfo | None) -> None:
    """Raise unless the joined file holds what was planned: the frame count, one video
    stream (and one audio stream when the source had audio), the planned duration.
    Read from an MP4 or MOV file's index (:func:`indexed_counts`), else by demuxing it."""
    try:
        got = indexed_counts(path)
        if got is None:
            full = probe(path)
            got = (full.frames, len(full.audio), full.duration)
    except VideoError as exc:
        raise OutputError(f"{out}: the joined file is unreadable ({exc})") from None
    frames, audios, seconds = got
    wanted_audio = 1 if audio is not None else 0
    duration = float(count / info.rate)
    if frames != count or audios != wanted_audio or \
            abs(seconds - duration) > 1.5 / float(info.rate):
        raise OutputError(f"{out}: the joined file has {frames} frames, "
                          f"{audios} audio stream(s) and {seconds:.2f} s where "
                          f"{count} frames, {wanted_audio} and {duration:.2f} s were planned; "
                          "it was not written (rerun to repair)")


_TAIL_PACKETS = 16  # packets read at a stream's end (more than B-frames reorder)


def indexed_counts(path: Path) -> tuple[int, int, float] | None:
    """An MP4 or MOV file's video frames, audio streams and video duration (s) as its index
    lists them, with the first and last few video packets read to show that the data
    reaches the index's end (:func:`_reaches_end`); no decoder, and not the whole
    file (a film's joined file is tens of GB: :func:`pipeline.video.probe` would read it
    all again). None for other containers, an index without a frame count, or data not
    shown to reach the index's end (the caller demuxes it whole); :class:`VideoError` if
    it cannot be read."""
    import av

    try:
        with av.open(str(path), options={"codec_whitelist": "none"}) as container:
            if not container.format.name.startswith("mov,") or not container.streams.video:
                return None
            video = container.streams.video[0]
            if not video.frames or not video.duration:
                return None
            if not _reaches_end(container, video):
                return None  # (a file whose data may end early: demuxed whole)
            return (video.frames, len(container.streams.audio),
                    float(video.duration * video.time_base))
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: not a readable video ({exc.strerror or exc})") from None


def _reaches_end(container, stream) -> bool:
    """Whether the video ``stream``'s last packet ends where its index ends (its first
    packet's dts + its duration, as at a constant frame rate with even decode steps): a
    cut file loses its last packets. False too for a file whose decode steps are not
    even (a join of segments whose B-frames start differently), which is then counted
    by demuxing it whole."""
    container.seek(0)
    first = next((p for p in container.demux(stream) if p.dts is not None), None)
    if first is None:
        return False
    end = first.dts + stream.duration
    step = stream.duration // stream.frames
    container.seek(max(first.dts, end - _TAIL_PACKETS * step), stream=stream,
                   backward=True, any_frame=True)
    last = first
    for packet in container.demux(stream):
        if packet.size and packet.dts is not None:
            last = packet
    return last.dts + (last.duration or step) == end


def output_bytes(segments: list[Path], info: VideoInfo, count: int,
                 audio: AudioInfo | None) -> int:
    """What the joined output needs on disk: the segments, plus the audio at up to
    320 kb/s (its bitrate is not known before muxing)."""
    video = sum(p.stat().st_size for p in segments)
    return video + (int(count / info.rate * 40_000) if audio is not None else 0)
