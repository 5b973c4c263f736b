"""``mosaic photo --dzi``: the Deep Zoom pyramid and its page, opened in a real browser.

The page is opened from the filesystem (``file://``, no server) in Debian's headless
Chromium. The page reports in its title the deepest pyramid level it has loaded tiles
from; with ``?zoom=Z`` it zooms in after the first tile. The test checks that the home
view loads tiles, that zooming loads tiles from the deepest levels (which the home view
does not need), and saves a screenshot of the zoomed view as an artifact. Without a
browser on PATH the test is skipped with that reason (``.ci/run`` installs one).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import pytest
from chromium import Chromium, find_browser
from helpers import gradient_image, mosaic

READY = ("window.mosaicState && mosaicViewer.world.getItemCount() > 0 && "
         "mosaicViewer.world.getItemAt(0).getFullyLoaded() && "
         "(mosaicState.zoomed || !location.search) && JSON.stringify(mosaicState)")


def browser() -> str:
    exe = find_browser()
    if exe is None:
        pytest.skip("no Chromium on PATH: the deep-zoom browser test is skipped "
                    "(`apt-get install -y chromium`; .ci/run installs it)")
    return exe


def view(exe: str, profile: Path, url: str, shot: Path | None = None) -> dict:
    """Open ``url``, wait until everything in view is loaded; the page's state."""
    with Chromium(exe, profile) as page:
        page.open(url)
        state = json.loads(page.wait_for(READY, timeout=60))
        if shot is not None:
            page.screenshot(shot)
    assert state["failed"] is None, state
    return state


def test_zoom_page_loads_the_pyramid_and_zooms(tile_index: Path, tmp_path: Path) -> None:
    exe = browser()
    src = gradient_image(tmp_path / "src.png", 320, 240)
    out = tmp_path / "poster dir" / "poster.jpg"  # a space in the path: URLs must cope
    out.parent.mkdir()
    run = mosaic("photo", src, "--index", tile_index, "--out", out, "--cells", "40",
                 "--tile-px", "64", "--radius", "2", "--dzi", "-q")
    assert run.returncode == 0, run.stderr
    dzi, files, html = (out.parent / "poster.dzi", out.parent / "poster_files",
                        out.parent / "poster.html")
    size = ET.parse(dzi).getroot().find("{*}Size")
    width, height = int(size.get("Width")), int(size.get("Height"))
    assert (width, height) == (2560, 1920)
    top = math.ceil(math.log2(max(width, height)))  # the full-resolution level
    assert (files / str(top)).is_dir() and any((files / str(top)).iterdir())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]

    url = html.as_uri()
    home = view(exe, tmp_path / "profile-home", url)
    assert not home["zoomed"] and home["loaded"] > 0, home
    # the whole picture in an 800x600 window does not need the full-resolution level
    assert 0 <= home["deepest"] < top, home

    shot = tmp_path / "zoomed.png"  # the test artifact
    zoomed = view(exe, tmp_path / "profile-zoom", url + "?zoom=16", shot)
    assert zoomed["zoomed"], zoomed
    assert zoomed["deepest"] == top, (home, zoomed)  # down to single tiles, full size
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (600, 800)
    assert img.std() > 10, "the screenshot shows no picture"
    print(f"screenshot of the zoomed page: {shot}")
