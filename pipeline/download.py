"""URL inputs: what counts as a URL (:func:`is_url`), and a video fetched with yt-dlp once
into the cache.

Each URL gets its own folder, ``<cache>/downloads/<digest of the URL>/``, marked as the
tool's, locked while the download runs (a second run waits, then reuses it) and recorded
in ``done.json`` (written last) once finished. A render holds the folder (a shared lock)
while it uses the file, so ``mosaic clean`` leaves it alone. yt-dlp merges separate video
and audio with the same ffmpeg the pipeline uses.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.cache import digest_text, mark_owned, write_json
from pipeline.errors import VideoError
from pipeline.locks import file_lock
from pipeline.video import ffmpeg_exe

log = logging.getLogger(__name__)


def is_url(text: str) -> bool:
    """Whether ``text`` looks like a URL for yt-dlp rather than a local path."""
    return "://" in text and text.split("://", 1)[0].lower() in ("http", "https", "ftp")


class _YtdlpLog:
    """Route yt-dlp's messages into our logger; keep its last error."""

    def __init__(self) -> None:
        self.last_error = ""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp warning: %s", msg)

    def error(self, msg: str) -> None:
        self.last_error = msg.replace("ERROR: ", "").strip()


def download_folder(cache_dir: str | Path, url: str) -> Path:
    """The folder ``url`` is downloaded into: ``cache_dir/<digest of url>/``."""
    return Path(cache_dir) / digest_text(url)


def download(url: str, cache_dir: str | Path, fmt: str) -> Path:
    """Download ``url`` with yt-dlp into :func:`download_folder` once.

    A finished download is recorded in ``done.json`` (written last) and reused; the
    folder is marked as the tool's, and locked while downloading (a second run waits,
    then reuses it). yt-dlp merges separate video and audio with the same ffmpeg the
    pipeline uses.
    """
    folder = download_folder(cache_dir, url)
    with file_lock(folder / ".lock", f"the download of {url}"):
        mark_owned(folder, "download")
        return _download_locked(url, folder, fmt)


def _download_locked(url: str, folder: Path, fmt: str) -> Path:
    """The download itself (the folder's lock is held): reused when done, else fetched."""
    import yt_dlp  # heavy: imported where it is used

    done = folder / "done.json"
    if done.is_file():
        path = folder / json.loads(done.read_text())["file"]
        if path.is_file():
            log.info("using the cached download of %s", url)
            return path
    folder.mkdir(parents=True, exist_ok=True)
    logger = _YtdlpLog()
    opts = {"format": fmt, "outtmpl": str(folder / "video.%(ext)s"), "quiet": True,
            "noprogress": True, "no_warnings": True, "logger": logger,
            "ffmpeg_location": ffmpeg_exe(), "merge_output_format": "mp4",
            "noplaylist": True, "retries": 3, "socket_timeout": 30}
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=True)
            path = Path(ydl.prepare_filename(info))
    except yt_dlp.utils.DownloadError as exc:
        reason = logger.last_error or str(exc).replace("ERROR: ", "")
        raise VideoError(f"{url}: download failed: {reason}") from None
    merged = path.with_suffix(".mp4")
    path = merged if merged.is_file() else path
    if not path.is_file():
        raise VideoError(f"{url}: yt-dlp reported success but wrote no file")
    write_json(done, {"url": url, "file": path.name})
    return path
