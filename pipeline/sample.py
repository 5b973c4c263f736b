"""Built-in sample media, generated procedurally (no download): a corpus and a clip.

``make_sample_corpus`` draws a few hundred small, colourful, varied images (gradients,
discs, stripes, checks, blobs) whose colours cover the hue, saturation and lightness
range, so that a mosaic made of them still shows the picture.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.cache import atomic_output
from pipeline.errors import OutputError
from pipeline.video import run_ffmpeg


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """One BGR colour, float32 (3,), spread over hue, saturation and value."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255) ** 0.7 * 255 ** 0.3,
                      rng.uniform(25, 255)]]], dtype=np.float32)
    if rng.random() < 0.12:  # some greys, from black to white
        hsv[0, 0, 1] = 0
        hsv[0, 0, 2] = rng.uniform(0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def draw_sample_image(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """Draw one procedural image, (size, size, 3) uint8 BGR."""
    a, b = _random_colour(rng), _random_colour(rng)
    b = a + (b - a) * rng.uniform(0.15, 0.6)  # a related second colour keeps the mean clear
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    kind = rng.integers(0, 5)
    if kind == 0:  # linear gradient at a random angle
        t = np.cos(rng.uniform(0, np.pi)) * xx + np.sin(rng.uniform(0, np.pi)) * yy
    elif kind == 1:  # radial gradient
        cy, cx = rng.uniform(0.2, 0.8, 2)
        t = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) * 1.4
    elif kind == 2:  # stripes
        freq = rng.uniform(2, 8)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx if rng.random() < 0.5 else yy))
    elif kind == 3:  # checks
        n = int(rng.integers(2, 7))
        t = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(np.float32)
    else:  # smooth blobs
        noise = rng.random((6, 6)).astype(np.float32)
        t = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    t = np.clip(t, 0, 1)[..., None]
    img = a * (1 - t) + b * t
    for _ in range(int(rng.integers(0, 4))):  # a few discs in a third colour
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(float(v) for v in (a + (_random_colour(rng) - a) * 0.5))
        cv2.circle(img, centre, int(rng.integers(size // 12, size // 4)), colour, -1,
                   cv2.LINE_AA)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def make_sample_corpus(out_dir: str | Path, count: int = 400, seed: int = 0,
                       size: int = 96) -> list[Path]:
    """Write ``count`` sample images into ``out_dir`` (JPEG and PNG) and return their paths.

    Existing files with the same names are left alone, so a rerun is instant.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        img = draw_sample_image(rng, size)
        suffix = ".png" if i % 5 == 0 else ".jpg"
        path = out_dir / f"sample_{i:04d}{suffix}"
        paths.append(path)
        if path.exists():
            continue
        params = [cv2.IMWRITE_JPEG_QUALITY, 92] if suffix == ".jpg" else []
        ok, buf = cv2.imencode(suffix, img, params)
        if not ok:
            raise OutputError(f"{path}: cannot encode the sample image")
        with atomic_output(path) as f:
            f.write(buf.tobytes())
    return paths


def make_sample_clip(path: str | Path, seconds: float = 6.0, size: str = "320x240",
                     rate: int = 25, audio: bool = True) -> Path:
    """Write a short clip with motion and (by default) a tone, from ffmpeg's lavfi sources.

    The picture is ``testsrc2`` (moving colour patterns); the audio a 440 Hz sine in AAC.
    An existing file is left alone.
    """
    path = Path(path)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "128k"]
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    try:
        run_ffmpeg([*args, str(tmp)], f"generating {path}")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
