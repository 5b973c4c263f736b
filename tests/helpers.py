"""Helpers shared by the test files (no test file imports another): running ``mosaic``
as a user would, comparing folders and indexes, processes, test images, reference colour
formulas, and scoring a pixel mosaic whose tile ids are known."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import FFmpegError
from pipeline.features import srgb_to_lab
from pipeline.metrics import FrameScorer, sub_means
from pipeline.repeats import cell_layout

FAST = ("--scale", "1", "--preset", "ultrafast", "--set", "render.segment_frames=10",
        "--set", "render.encoder_threads=1")


def mosaic(*args: object, check_one_line: bool = True, **popen) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline ARGS`` as a user would; never a traceback, and a failure
    is exactly one ``error:`` line."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)],
                          capture_output=True, text=True, timeout=300, **popen)
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode != 0 and check_one_line:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    return proc


def no_temporaries(root: Path) -> bool:
    return not [p for p in root.rglob("*.tmp")]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> content), symbolic links as targets."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            files[str(path.relative_to(root))] = os.readlink(path).encode()
        elif path.is_file():
            files[str(path.relative_to(root))] = path.read_bytes()
    return files


def framemd5(path: Path) -> list[str]:
    import imageio_ffmpeg

    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path),
                          "-map", "0:v", "-f", "framemd5", "-"], capture_output=True,
                         text=True, check=True)
    return [line.rsplit(",", 1)[1].strip() for line in out.stdout.splitlines()
            if line and not line.startswith("#")]


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            ppid = int(stat_line[stat_line.rindex(b")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def parent(pid: int) -> int:
    """The parent of ``pid`` (0 where it is gone)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0
    return int(stat_line[stat_line.rindex(b")") + 2:].split()[1])


def cmdline(pid: int) -> bytes:
    """The command line of ``pid`` (empty where it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


FORKSERVER = b"multiprocessing.forkserver"  # in the command line of the server and its forks


def workers(pid: int) -> list[int]:
    """The local worker processes of the render ``pid``: forked from its forkserver (the
    children of its child that runs multiprocessing's forkserver), or loky's own (its
    children named LokyProcess); not their children (a copy of a worker between its fork
    and its exec of ffmpeg)."""
    below = descendants(pid)
    kids = [p for p in below if parent(p) == pid]
    servers = {p for p in kids if FORKSERVER in cmdline(p)}
    return [p for p in below if parent(p) in servers] + \
        [p for p in kids if b"LokyProcess" in cmdline(p)]


def alive(pid: int) -> bool:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat_line[stat_line.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def arrays(index_dir: Path) -> dict[str, np.ndarray]:
    """Every array artifact of an index, loaded into memory."""
    out = {name: np.load(index_dir / name) for name in
           ("tiles.npy", "features_hist.npy", "features_lab.npy")}
    with np.load(index_dir / "clusters.npz") as z:
        out.update({f"clusters/{k}": z[k] for k in z.files})
    return out


def assert_same_index(a: Path, b: Path) -> None:
    left, right = arrays(a), arrays(b)
    assert left.keys() == right.keys()
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


def gradient_image(path: Path, w: int = 320, h: int = 240, seed: int = 0) -> Path:
    """A colourful test photo: gradients, a disc and some noise, written to ``path``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.dstack([x * 255 / w, y * 255 / h, (x + y) % 256]).astype(np.float32)
    img += rng.normal(0, 6, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    cv2.circle(img, (w // 2, h // 2), h // 4, (30, 200, 240), -1)
    cv2.imwrite(str(path), img)
    return path


def reference_lab(bgr01: np.ndarray) -> np.ndarray:
    """Independent CIE formula (sRGB, D65) for checking: (..., 3) BGR in 0..1 -> Lab."""
    rgb = bgr01[..., ::-1].astype(np.float64)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                  [0.019334, 0.119193, 0.950227]])
    xyz = lin @ m.T / np.array([0.950456, 1.0, 1.088754])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lab_l = np.where(xyz[..., 1] > 0.008856, 116 * np.cbrt(xyz[..., 1]) - 16,
                     903.3 * xyz[..., 1])
    return np.stack([lab_l, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def score_ids(scorer: FrameScorer, source: np.ndarray, mosaic: np.ndarray, ids: np.ndarray,
              prev: np.ndarray | None = None) -> None:
    """Score one frame of a pixel ``mosaic`` (rows * h, cols * w, 3) uint8 whose tile
    ``ids`` (rows, cols) are known, as a render's painter does (its cells' sub-grid means
    from the pixels, each cell's change against the ``prev`` mosaic frame)."""
    g = scorer.grid
    sub = np.ascontiguousarray(cell_layout(sub_means(mosaic, g), g))
    change = np.zeros((g.rows, g.cols), np.float32)
    if prev is not None:
        diff = cv2.absdiff(mosaic, prev).astype(np.float32).mean(axis=-1)
        change = cv2.resize(diff, (g.cols, g.rows), interpolation=cv2.INTER_AREA)
    scorer.update_ids(source, ids, np.zeros(ids.shape, np.uint8), change, sub,
                      srgb_to_lab(sub))


def ffmpeg(*args: str) -> None:
    """Run the bundled ffmpeg to make test media (lavfi sources).

    Always imageio-ffmpeg's recent build, whatever system ffmpeg the pipeline itself
    picks: test media may use options an older system ffmpeg lacks (``-display_rotation``
    is ffmpeg 6+; Debian 12 ships 5.1), and the pipeline is then tested on those files.
    """
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
           "-y", *(str(a) for a in args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FFmpegError("making test media", proc.stderr)


def make_shots(path: Path, size: str = "160x120", seconds: float = 1.0) -> Path:
    """A multi-shot clip (H.264, 25 fps) with a tone: testsrc2, SMPTE bars, a Mandelbrot
    zoom and testsrc2 again, ``seconds`` each, cut hard from one to the next."""
    sources = [f"testsrc2=size={size}:rate=25", f"smptebars=size={size}:rate=25",
               f"mandelbrot=size={size}:rate=25", f"testsrc2=size={size}:rate=25"]
    args: list[str] = []
    for src in sources:
        args += ["-f", "lavfi", "-t", str(seconds), "-i", src]
    total = seconds * len(sources)
    args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={total}",
             "-filter_complex", "".join(f"[{i}:v]" for i in range(len(sources)))
             + f"concat=n={len(sources)}:v=1:a=0[v]", "-map", "[v]", "-map",
             f"{len(sources)}:a", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
             "yuv420p", "-c:a", "aac"]
    ffmpeg(*args, path)
    return path


def make_clip(path: Path, size: str = "160x120", rate: str = "25", seconds: float = 2.0,
              audio: bool = True, extra: tuple[str, ...] = ()) -> Path:
    """A testsrc2 clip (H.264) with an optional 440 Hz AAC tone of the same length."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    args += [*extra, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac"]
    ffmpeg(*args, path)
    return path
