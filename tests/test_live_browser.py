"""``mosaic live`` in a real browser: Debian's headless Chromium opens the page of a
running ``mosaic live`` fed by a generated clip, sees the mosaic change over time,
moves a control and sees its effect in the frames, takes a snapshot, shows the render
command, and the test saves a screenshot. Without a browser on PATH the test is skipped
with that reason (``.ci/run`` installs one).
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from chromium import Chromium, find_browser
from helpers import ffmpeg
from livekit import LiveProcess

# the frame on the page: its size and a checksum of its pixels (drawn onto a canvas)
FRAME = """(() => {
  const img = document.getElementById('view');
  if (!img.naturalWidth) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0;
  for (let i = 0; i < d.length; i += 4) {
    sum = (sum * 31 + d[i] + d[i + 1] * 3 + d[i + 2] * 7) % 1000000007;
  }
  return JSON.stringify([c.width, c.height, sum]);
})()"""


def browser() -> str:
    exe = find_browser()
    if exe is None:
        pytest.skip("no Chromium on PATH: the live page's browser test is skipped "
                    "(`apt-get install -y chromium`; .ci/run installs it)")
    return exe


def frame(page: Chromium) -> list:
    import json

    return json.loads(page.wait_for(FRAME, timeout=30))


def edges(jpeg: bytes, cell: int = 32) -> float:
    """The mean step in grey levels across the cells' vertical edges: about 10 for a
    mosaic of this clip (neighbouring photos differ), under 1 for the smooth source
    alone (a ratio to the other edges of JPEG's 8x8 blocks is no use here: on a
    smooth picture both are noise)."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE).astype(float)
    step = np.abs(np.diff(img, axis=1)).mean(0)  # per column boundary
    return float(step[np.arange(len(step)) % cell == cell - 1].mean())


def test_live_page_in_chromium(tile_index: Path, tmp_path: Path) -> None:
    exe = browser()
    clip = tmp_path / "clip.mp4"  # smooth moving colours: no edges of its own
    ffmpeg("-f", "lavfi", "-i", "gradients=s=320x240:r=25:d=4:speed=0.05", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", clip)
    with LiveProcess(clip, "--index", tile_index, "--loop", "--cells", "16") as live, \
            Chromium(exe, tmp_path / "profile", 1280, 800) as page:
        page.open(live.url)
        first = frame(page)
        assert first[:2] == [16 * 32, 12 * 32]
        seen = {first[2]}
        for _ in range(20):  # the mosaic changes over time
            time.sleep(0.25)
            seen.add(frame(page)[2])
        assert len(seen) >= 3, seen

        # a control: fewer cells across; the frames that follow have them, within a second
        moved = time.monotonic()
        page.evaluate("const c = document.getElementById('cols'); c.value = 10; "
                      "c.dispatchEvent(new Event('change'))")
        page.wait_for("document.getElementById('view').naturalWidth === 320", timeout=20)
        applied = time.monotonic() - moved
        print(f"cells across 16 -> 10: on the page after {applied:.2f} s")
        assert applied <= 1.0
        assert frame(page)[:2] == [10 * 32, 8 * 32]
        assert live.stats()["look"]["cols"] == 10
        # another: the blend, all source: the tiles' edges go from the frames
        before = edges(live.get("/snapshot.jpg")[2])
        page.evaluate("const a = document.getElementById('alpha'); a.value = 1; "
                      "a.dispatchEvent(new Event('change'))")
        made = live.wait_for(lambda s: s["look"]["alpha"] == 1.0, what="the blend")["frames"]
        live.wait_for(lambda s: s["frames"] >= made + 3, what="frames with the blend")
        after = edges(live.get("/snapshot.jpg")[2])
        print(f"step across the cell edges: {before:.1f} levels, {after:.1f} with blend 1")
        assert before > 5 and after < 2, (before, after)
        page.wait_for("document.getElementById('alpha-v').textContent === '1'")

        page.evaluate("document.getElementById('snap').click()")
        page.wait_for("liveState.snapshots === 1 && "
                      "document.getElementById('still').naturalWidth === 320")
        page.evaluate("document.getElementById('copy').click()")
        command = page.wait_for("document.getElementById('command').textContent")
        assert "mosaic render" in command and "--alpha 1" in command and \
            "make render" in command
        page.wait_for("document.getElementById('fps').textContent !== '-' && "
                      "document.getElementById('latency').textContent.includes('ms')")
        assert page.evaluate("liveState.errors.length") == 0
        live.control(alpha=0.2)  # the mosaic again, for the screenshot
        live.wait_for(lambda s: s["look"]["alpha"] == 0.2, what="the blend back")
        time.sleep(1)
        shot = page.screenshot(tmp_path / "live-page.png")  # the test artifact
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (800, 1280) and img.std() > 10
    print(f"screenshot of the live page: {shot}")
