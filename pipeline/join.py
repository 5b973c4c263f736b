"""Joining the painted segments into OUT: streamed while the others are painted, or at
the end.

A long render's join is long too: a busy 2-hour 5120x2880 film's segments are about
82 GB, read again by whoever joins them. :class:`StreamJoin` appends each segment as
soon as it and the ones before it are painted, so the job ends with only the last one
or two left to join. It relays the segments' video packets (H.264 or HEVC, opened
without a decoder), their timestamps moved on by the segments before, as fragmented MP4
(a fragment a frame: exact timestamps, nothing held back) into one ffmpeg muxer that
takes the source's audio (cut to the range) as the end join does and writes OUT's
container to a temporary file beside it, named after the job (a killed run's is
replaced); :meth:`StreamJoin.finish` closes it, has it checked, and renames it over
OUT. The temporary file is locked (``flock``) while its join runs: a killed run's, of
this job or another writing the same OUT, is unlocked and removed by the next join
there. Other codecs are joined at the end by the concat demuxer
(:func:`pipeline.output.concat_and_mux`). Either way the decoded frames, their
timestamps and the audio are the same, and the file does not depend on the order in
which the segments were painted.

Each streamed segment's record (kind ``join``: the relay's CPU, the muxer's CPU
meanwhile and the segment's bytes) goes to the job's ``tasks.jsonl``, then the finish's
(``mux``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.cache import ensure_free, publish
from pipeline.errors import FFmpegError, OutputError
from pipeline.output import (
    Container,
    audio_inputs,
    check_joined,
    concat_and_mux,
    mux_args,
    output_bytes,
)
from pipeline.planfile import Segment
from pipeline.tasklog import TaskClock, TaskLog, file_bytes
from pipeline.video import AudioInfo, Piped, VideoInfo, ffmpeg_command

log = logging.getLogger(__name__)

STREAMED = ("h264", "hevc")  # codecs joined as they are painted
_TIMESCALE = ("mp4", "mov")  # muxers told to keep the segments' video time base


_MUXER_EXIT = 5.0  # seconds a muxer that closed the relay's pipe is given to exit


def _created_locked(path: Path) -> int:
    """``path`` created (empty) and locked for this join: its open descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def remove_stale_joins(out: Path) -> list[Path]:
    """Remove the temporary files of joins into ``out`` that no running join holds (a
    killed run's, of any job writing ``out``): those removed."""
    removed, name = [], re.compile(rf"\.{re.escape(out.name)}\.[^./]+\.join\.tmp")
    for path in (p for p in out.parent.iterdir() if name.fullmatch(p.name)):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its join is running
            continue
        else:
            path.unlink(missing_ok=True)
            removed.append(path)
            log.info("removed %s, a killed run's unfinished join", path)
        finally:
            os.close(fd)
    return removed


class _UnevenError(Exception):
    """A segment's decode timestamps, moved on, do not follow the segment before it: one
    of a frame or two decodes from its first frame where a longer one with B-frames
    starts a frame or two earlier. The relay stops; the concat demuxer's join at the end
    (which ffmpeg evens out, as before this module) joins the job instead."""


class StreamJoin:
    """Join ``paths`` (the segments of ``segments``, in order) into ``out``'s temporary
    file as :meth:`add` hands them in, in any order; :meth:`finish` or :meth:`abort`.

    ``source`` holds the audio (``audio``, None for none), cut to ``start_s`` and
    ``duration_s``; ``check`` raises if the joined file is not what was planned. The
    temporary file beside ``out`` is named after ``tag`` (the job's key). Where the
    segments' decode steps do not follow on (:class:`_UnevenError`), ``at_end`` joins them.
    """

    def __init__(self, segments: list[Segment], paths: list[Path], out: Path,
                 source: VideoInfo, audio: AudioInfo | None, start_s: float,
                 duration_s: float, container: Container, check: Callable[[Path], None],
                 tag: str, at_end: EndJoin, tasks: TaskLog | None = None) -> None:
        self.segments, self.paths, self.out = segments, paths, out
        self.check, self.tasks, self.container = check, tasks, container
        self.at_end = at_end  # the join at the end, where segments cannot be streamed
        self._audio = audio_inputs(source.path, audio, start_s, duration_s, container)
        out.parent.mkdir(parents=True, exist_ok=True)
        # named after the job (whose lock the caller holds): a killed run's is replaced
        self.tmp = out.parent / f".{out.name}.{tag}.join.tmp"
        remove_stale_joins(out)  # (this job's too: its lock is the caller's)
        self._held = _created_locked(self.tmp)  # (the muxer's -y keeps the same file)
        self._position = {seg.number: i for i, seg in enumerate(segments)}
        self._ready: set[int] = set()
        self._cond = threading.Condition()
        self._next, self._stop = 0, False
        self._error: BaseException | None = None  # the relay's
        self._failed: BaseException | None = None  # the join's, as reported
        self._muxer: Piped | None = None
        self._relay = self._video = None
        self._offset = 0
        self._dts = -(1 << 62)  # the last dts relayed
        self._uneven = False  # segments whose decode steps do not follow on (_UnevenError)
        self._attributed = 0.0  # the muxer's CPU seconds put in the joins' records
        self._thread = threading.Thread(target=self._run, daemon=True, name="mosaic-join")
        self._thread.start()

    def add(self, number: int) -> None:
        """Segment ``number`` is painted: join it once those before it are joined.
        Raises the join's error if it has failed (a full disk, an unreadable segment):
        the job stops at once, not after painting the rest."""
        if self._error is not None:
            raise self._failure()
        with self._cond:
            self._ready.add(self._position[number])
            self._cond.notify()

    def _failure(self) -> BaseException:
        """The error to report once the relay has failed: the muxer's own words where it
        failed first (a full disk, say), else the relay's (the muxer is then stopped)."""
        if self._failed is not None:
            return self._failed
        muxer, self._failed = self._muxer, self._error
        if muxer is not None and isinstance(self._error, BrokenPipeError):
            with contextlib.suppress(subprocess.TimeoutExpired):  # (it is failing: its words)
                muxer._proc.wait(timeout=_MUXER_EXIT)
        if muxer is not None and muxer._proc.poll() is not None:
            code, err = muxer._finish()
            if code != 0:
                self._failed = FFmpegError(f"writing {self.out}", err)
        elif muxer is not None:
            muxer._kill()
        assert self._failed is not None
        return self._failed

    def _wait_next(self) -> bool:
        with self._cond:
            while not self._stop and self._next not in self._ready:
                self._cond.wait()
            return not self._stop

    def _run(self) -> None:
        try:
            while self._next < len(self.paths) and self._wait_next():
                self._append(self._next)
                self._next += 1
        except _UnevenError:  # joined at the end instead: the streamed muxer and file go
            with self._cond:
                self._uneven, muxer = True, self._muxer
            if muxer is not None:
                muxer._kill()
            self.tmp.unlink(missing_ok=True)
            self._release()
        except BaseException as exc:  # handed to finish()
            self._error = exc

    def _start(self, stream) -> None:
        """The muxer, told the segments' video time base, and the relay into it
        (fragmented MP4 on its stdin)."""
        import av

        keep = ["-video_track_timescale", str(stream.time_base.denominator)] \
            if self.container.muxer in _TIMESCALE and stream.time_base.numerator == 1 else []
        inputs, maps = self._audio
        cmd = ffmpeg_command("-f", "mp4", "-i", "pipe:0", *inputs, "-map", "0:v:0",
                             "-c:v", "copy", *maps, *keep, *mux_args(self.container),
                             str(self.tmp), overwrite=True)
        with self._cond:  # never started after an abort (which reads it under the lock)
            if self._stop:
                raise FFmpegError(f"writing {self.out}", "the join was stopped")
            self._muxer = Piped(cmd, stdin=subprocess.PIPE)
        assert self._muxer._proc.stdin is not None
        self._relay = av.open(f"pipe:{self._muxer._proc.stdin.fileno()}", "w", format="mp4",
                            options={"movflags": "frag_every_frame+empty_moov+default_base_moof"})
        self._video = self._relay.add_stream_from_template(stream)
        self._video.time_base = stream.time_base

    def _append(self, position: int) -> None:
        """Relay segment ``position``'s packets, moved on by the segments before it."""
        import av

        seg, path = self.segments[position], self.paths[position]
        size = file_bytes(path)
        ensure_free(self.out.parent, size, f"writing {self.out}")
        clock, cpu, muxed = TaskClock(), time.thread_time(), self._muxer_cpu()
        end = self._offset
        try:
            segment = av.open(str(path), options={"codec_whitelist": "none"})
        except av.error.FFmpegError as exc:
            raise OutputError(f"{path}: a painted segment is unreadable "
                              f"({exc.strerror or exc}); rerun to paint it again") from None
        with segment:
            stream = segment.streams.video[0]
            if self._relay is None:
                self._start(stream)
            elif stream.time_base != self._video.time_base:
                raise OutputError(f"{path}: its time base {stream.time_base} is not the "
                                  f"first segment's {self._video.time_base}: they cannot be joined")
            for packet in segment.demux(stream):
                if packet.dts is None:
                    continue
                packet.pts += self._offset
                packet.dts += self._offset
                if packet.dts <= self._dts:  # (see _UnevenError)
                    raise _UnevenError
                self._dts = packet.dts
                end = max(end, packet.pts + (packet.duration or 0))
                packet.stream = self._video
                self._relay.mux(packet)
        self._offset = end
        if self.tasks is not None:
            deps = [f"paint-{seg.number:05d}"]
            if position:
                deps.append(f"join-{self.segments[position - 1].number:05d}")
            record = clock.record("join", seg.number, (seg.start, seg.start + seg.count),
                                  deps, {"segment": size}, {})
            muxed = self._muxer_cpu() - muxed
            self._attributed += muxed
            record.update(cpu_s=round(time.thread_time() - cpu, 4),
                          child_cpu_s=round(muxed, 4))
            self.tasks.append(record)

    def _muxer_cpu(self) -> float:
        """The muxer's CPU seconds so far (Linux; 0 elsewhere or before it starts)."""
        if self._muxer is None:
            return 0.0
        try:
            with open(f"/proc/{self._muxer._proc.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0

    def finish(self) -> None:
        """Join what is left, close the file, check it and rename it over OUT; its
        record (kind ``mux``)."""
        clock, cpu = TaskClock(), time.thread_time()
        self._thread.join()
        if self._uneven:
            self.at_end.finish()
            return
        try:
            if self._error is None and self._next < len(self.paths):
                self._error = FFmpegError(f"writing {self.out}", "the join stopped early")
            muxer = self._muxer
            if muxer is None:
                raise self._error or FFmpegError(f"writing {self.out}", "nothing to join")
            if self._error is not None:
                raise self._failure()
            self._relay.close()  # the last fragment, then the muxer's end of input
            with contextlib.suppress(BrokenPipeError):
                muxer._proc.stdin.close()  # type: ignore[union-attr]
            code, err = muxer._finish()
            if code != 0:
                raise FFmpegError(f"writing {self.out}", err)
            self.check(self.tmp)
            publish(self.tmp, self.out)
        except BaseException:
            self.abort()
            raise
        finally:
            self._release()
        if self.tasks is not None:
            last, first = self.segments[-1], self.segments[0]
            record = clock.record("mux", None, (first.start, last.start + last.count),
                                  [f"join-{last.number:05d}"], {},
                                  {"output": file_bytes(self.out)})
            # this thread's own CPU (the relay's is in the joins), and the muxer's that
            # the joins' records do not hold (it is counted whole once it is waited for)
            record.update(cpu_s=round(time.thread_time() - cpu, 4), child_cpu_s=round(
                max(0.0, record["child_cpu_s"] - self._attributed), 4))
            self.tasks.append(record)

    def abort(self) -> None:
        """Stop the relay and the muxer; remove the temporary file."""
        with self._cond:
            self._stop = True
            self._cond.notify()
            muxer = self._muxer
        if muxer is not None:
            muxer._kill()
        self._thread.join(timeout=10)
        self.tmp.unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        """Unlock (close) the temporary file's descriptor, once."""
        with self._cond:
            fd, self._held = self._held, -1
        if fd >= 0:
            os.close(fd)


class EndJoin:
    """The concat demuxer's join of every segment at the end (for codecs not streamed):
    :meth:`add` notes nothing, :meth:`finish` joins."""

    def __init__(self, segments: list[Segment], paths: list[Path], out: Path,
                 join: Callable[[], None], need: Callable[[], int],
                 tasks: TaskLog | None) -> None:
        self.segments, self.paths, self.out, self.tasks = segments, paths, out, tasks
        self._join, self._need = join, need

    def add(self, number: int) -> None:
        """Nothing to do before the end."""

    def finish(self) -> None:
        """Join every segment now, where the disk has room; its record (``mux``)."""
        ensure_free(self.out.parent, self._need(), f"writing {self.out}")
        clock = TaskClock()
        self._join()
        if self.tasks is not None:
            first, last = self.segments[0], self.segments[-1]
            self.tasks.append(clock.record(
                "mux", None, (first.start, last.start + last.count),
                [f"paint-{s.number:05d}" for s in self.segments],
                {"segment": file_bytes(*self.paths)}, {"output": file_bytes(self.out)}))

    def abort(self) -> None:
        """Nothing was started."""


def open_join(segments: list[Segment], paths: list[Path], out: Path, source: VideoInfo,
              audio: AudioInfo | None, frames: tuple[int, int], work: Path,
              container: Container, codec: str, tag: str,
              tasks: TaskLog | None) -> StreamJoin | EndJoin:
    """The join of ``segments`` (files ``paths``) of frames ``[first, first + count)`` of
    ``source``: streamed for :data:`STREAMED` codecs, else at the end; either checks the
    joined file against the plan (:func:`pipeline.output.check_joined`)."""
    first, count = frames
    start_s, duration_s = float(first / source.rate), float(count / source.rate)

    def check(path: Path) -> None:
        check_joined(path, out, source, count, audio)

    at_end = EndJoin(segments, paths, out,
                     lambda: concat_and_mux(paths, out, source, audio, start_s, duration_s,
                                            work, container, check=check, codec=codec),
                     lambda: output_bytes(paths, source, count, audio), tasks)
    if codec in STREAMED:
        return StreamJoin(segments, paths, out, source, audio, start_s, duration_s,
                          container, check, tag, at_end, tasks)
    return at_end
