"""Checking an external ffmpeg before trusting it.

The project prefers a system ffmpeg (often built with more hardware encoders) over the one
bundled by imageio-ffmpeg, but only one that is recent enough and has every encoder,
muxer, demuxer and filter the pipeline uses (:data:`FFMPEG_NEEDS`). :func:`ffmpeg_problem`
says what a candidate lacks; the check runs a few ``ffmpeg -encoders``-style listings,
about 10 ms each, once per process.
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

# The oldest release the test suite has been run against (Debian 12 ships 5.1).
MIN_FFMPEG = (5, 1)

# Everything the pipeline asks of ffmpeg, by listing. Encoders: H.264 video and AAC audio
# (render, sample clip, re-encoded audio). Muxers: the output containers and raw pipes.
# Demuxers: raw frame pipes, the segment concat list, lavfi sources (sample clip).
# Filters: frame-rate normalisation on decode, and the sample clip's sources.
FFMPEG_NEEDS: dict[str, tuple[str, ...]] = {
    "encoders": ("libx264", "aac"),
    "muxers": ("mp4", "mov", "matroska", "webm", "rawvideo"),
    "demuxers": ("rawvideo", "concat", "lavfi"),
    "filters": ("fps", "scale", "testsrc2", "sine"),
}

_FLAGS = re.compile(r"[A-Z.|]+|d")  # flag columns of a listing ('d': is a device)
_VERSION = re.compile(r"ffmpeg version (?:n)?(\d+)\.(\d+)")


def _run(exe: str, *args: str) -> str:
    """stdout of ``exe -hide_banner ARGS`` ('' if it cannot run)."""
    try:
        proc = subprocess.run([exe, "-hide_banner", *args], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout


def parse_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` from ``ffmpeg -version`` output; None for builds from git
    (``ffmpeg version N-12345-g...``), which carry no release number."""
    m = _VERSION.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_listing(text: str) -> set[str]:
    """Names in an ``ffmpeg -encoders/-muxers/-demuxers/-filters`` listing.

    Each entry line is ``FLAGS NAME[,NAME...] description``, where the flags may be
    spread over several columns (``D d lavfi``: a demuxer that is a device); the legend
    above the entries ends at a line of dashes.
    """
    names: set[str] = set()
    lines = text.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.strip().startswith("--")), 0)
    for line in lines[start:]:
        parts = line.split()
        while parts and _FLAGS.fullmatch(parts[0]):
            parts.pop(0)
        if parts:
            names.update(parts[0].split(","))
    return names


def ffmpeg_problem(exe: str) -> str | None:
    """Why ``exe`` cannot serve the pipeline (too old, or lacking something), or None."""
    with ThreadPoolExecutor(len(FFMPEG_NEEDS) + 1) as pool:
        version_text = pool.submit(_run, exe, "-version")
        listings = {kind: pool.submit(_run, exe, f"-{kind}") for kind in FFMPEG_NEEDS}
        version_out = version_text.result()
        found = {kind: parse_listing(f.result()) for kind, f in listings.items()}
    if not version_out.startswith("ffmpeg version"):
        return "it does not run or is not ffmpeg"
    version = parse_version(version_out)
    if version is not None and version < MIN_FFMPEG:
        return (f"version {version[0]}.{version[1]} is older than "
                f"{MIN_FFMPEG[0]}.{MIN_FFMPEG[1]}")
    missing = [f"{kind[:-1]} {name}" for kind, needs in FFMPEG_NEEDS.items()
               for name in needs if name not in found[kind]]
    if missing:
        return "it lacks " + ", ".join(missing)
    return None
