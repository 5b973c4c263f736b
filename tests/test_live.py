"""``mosaic live``: the engine on hand-made frames, the look and its render command, the
governor of the cell count, the reader, and the command line's checks.

The engine tests run the live adapter over the session's small tile index, with no
server and no files: a still scene stays still, motion repaints, a grown tile debuts.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_clip
from livekit import LiveProcess

from pipeline.cli import build_parser
from pipeline.config import RenderConfig, load_config
from pipeline.errors import ConfigError, VideoError
from pipeline.grid import Grid, make_grid
from pipeline.index import load_index
from pipeline.live_engine import LiveEngine, TilePool
from pipeline.live_look import Look, changed_look, layout, render_command, scale_for
from pipeline.live_pace import CellGovernor, Pace
from pipeline.live_reader import FrameSource, open_source, processing_size
from pipeline.video import probe


def gradient(h: int = 120, w: int = 160, shift: int = 0) -> np.ndarray:
    """A colourful test frame (H, W, 3) uint8 BGR; ``shift`` moves it sideways."""
    y, x = np.mgrid[0:h, 0:w]
    x = (x + shift) % w
    return np.dstack([x * 255 / w, y * 255 / h, 255 - x * 200 / w]).astype(np.uint8)


@pytest.fixture(scope="module")
def pool(tile_index: Path) -> TilePool:
    return TilePool(load_index(tile_index), room=16)


def engine(pool: TilePool, cols: int = 8, **config) -> LiveEngine:
    grid, _ = layout((120, 160), (120, 160), pool.tile_hw, cols)
    return LiveEngine(pool, RenderConfig(**config), grid)


def test_engine_paints_the_first_frame_then_keeps_a_still_scene(pool: TilePool) -> None:
    eng = engine(pool)
    frame = gradient()
    first = eng.step(frame)
    assert first.painted == eng.grid.cells and eng.state.canvas.placed
    image = eng.shown(frame, 0).copy()
    assert image.shape == (eng.grid.out_h, eng.grid.out_w, 3) and image.std() > 10
    for _ in range(5):  # the same frame again: nothing to decide, nothing repainted
        still = eng.step(frame)
        assert still.decided == 0 and still.painted == 0
    assert np.array_equal(eng.shown(frame, 0), image)


def test_engine_repaints_where_the_source_moves(pool: TilePool) -> None:
    eng = engine(pool)
    eng.step(gradient())
    ids = eng.state.canvas.ids.copy()
    moved = [eng.step(gradient(shift=40 * k)) for k in range(1, 4)]
    assert sum(s.painted for s in moved) > 0
    assert not np.array_equal(eng.state.canvas.ids, ids)
    blended = eng.shown(gradient(shift=120), 0.5)  # half source, half mosaic
    assert blended.shape == eng.canvas.image.shape


def test_engine_configure_keeps_or_restarts_the_canvas(pool: TilePool) -> None:
    eng = engine(pool)
    eng.step(gradient())
    ids = eng.state.canvas.ids.copy()
    eng.configure(RenderConfig(tone=1.0), eng.grid)  # paint-only: same tiles
    assert np.array_equal(eng.state.canvas.ids, ids)
    eng.configure(RenderConfig(matching="refined", recolour=0.5), eng.grid)
    assert np.array_equal(eng.state.canvas.ids, ids)  # a new planner, the same canvas
    assert eng.step(gradient()).decided == 0
    grid, _ = layout((120, 160), (120, 160), pool.tile_hw, 10)
    eng.configure(RenderConfig(), grid)  # new cells: a new canvas
    assert not eng.state.canvas.placed and eng.step(gradient()).painted == grid.cells


def test_grown_tile_debuts_in_the_cell_it_fits(tile_index: Path) -> None:
    pool = TilePool(load_index(tile_index), room=4)
    eng = engine(pool)
    frame = gradient()
    eng.step(frame)
    magenta = np.zeros((1, *pool.tile_hw, 3), np.uint8)
    magenta[..., 0] = magenta[..., 2] = 255
    frame[:30, :40] = (255, 0, 255)  # a magenta corner: the cell the tile fits
    ids = eng.grow(magenta)
    assert ids.tolist() == [pool.n - 1] and pool.groups[ids[0]] > pool.groups[:ids[0]].max()
    step = eng.step(frame)
    assert step.debuts == (ids[0],) and eng.showing(ids).all()
    assert eng.state.canvas.ids[0, 0] == ids[0]
    cell = eng.canvas.image[:pool.tile_hw[0], :pool.tile_hw[1]].reshape(-1, 3).mean(0)
    assert cell[0] > 200 and cell[1] < 60 and cell[2] > 200  # painted, magenta
    assert len(eng.grow(np.repeat(magenta, 8, 0))) == 3  # the pool's room is 4


def test_look_controls_are_checked() -> None:
    look = Look(40, 0.2, 0.9, 0.0, "nearest", auto=True)
    new = changed_look(look, {"alpha": 1, "cols": 20, "matching": "cluster"}, 80)
    assert (new.alpha, new.cols, new.matching, new.auto) == (1.0, 20, "cluster", False)
    assert changed_look(new, {"auto": True}, 80).auto
    for bad in ({"alpha": 2}, {"alpha": True}, {"cols": 200}, {"cols": 7.5},
                {"matching": "best"}, {"speed": 1}, {"auto": "yes"}):
        with pytest.raises(ConfigError):
            changed_look(look, bad, 80)


@pytest.mark.parametrize("width,cols", [(640, 40), (640, 33), (1920, 57), (320, 8),
                                        (1280, 160)])
def test_scale_gives_exactly_the_cells(width: int, cols: int) -> None:
    scale = scale_for(cols, width, 32)
    assert make_grid(width * 3 // 4, width, (32, 32), scale).cols == cols


def test_render_command_parses_back_to_the_look() -> None:
    look = Look(33, 0.35, 0.4, 0.5, "refined")
    mosaic, make = render_command("my clip.mp4", "ix dir", look, scale_for(33, 640, 32),
                                  ("--set", "render.settle=2"))
    argv = shlex.split(mosaic)
    assert argv[:3] == ["mosaic", "render", "my clip.mp4"]
    args = build_parser().parse_args(argv[1:])
    cfg = load_config(args.config, args.overrides, {"render.scale": args.scale,
                                                    "render.alpha": args.alpha}).render
    assert (cfg.alpha, cfg.recolour, cfg.tone, cfg.matching, cfg.settle) == \
        (0.35, 0.4, 0.5, "refined", 2)
    assert make_grid(480, 640, (32, 32), cfg.scale).cols == 33
    assert shlex.split(make)[:4] == ["make", "render", "VIDEO=my clip.mp4", "INDEX=ix dir"]


def test_governor_shrinks_when_slow_and_grows_back() -> None:
    gov, pace = CellGovernor(40, 1 / 25), Pace()
    now = time.monotonic()
    gov.restarted(now - 10)
    for i in range(20):
        pace.made(0.05, now - 1 + i * 0.04)  # 50 ms of work for a 40 ms frame
    smaller = gov.suggest(40, pace, now)
    assert smaller is not None and 16 <= smaller < 40
    assert gov.suggest(smaller, pace, now + 1) is None  # settling after a change
    pace = Pace()
    for i in range(20):
        pace.made(0.005, now + 9 + i * 0.04)
    bigger = gov.suggest(smaller, pace, now + 10)
    assert bigger is not None and smaller < bigger <= 40


def test_processing_size() -> None:
    assert processing_size(640, 480) == (480, 640)
    assert processing_size(1920, 1080) == (360, 640)
    assert processing_size(321, 241) == (240, 320)


def test_reader_plays_a_file_in_real_time_then_ends(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", "160x120", "25", 2.0, audio=False)
    src = open_source(str(clip))
    assert (src.kind, src.width, src.height, src.audio) == ("file", 160, 120, None)
    start = time.monotonic()
    frames = []
    with FrameSource(src, (120, 160)) as reader:
        while reader.ended is None or reader.read > len(frames) + reader.dropped:
            if (f := reader.take(0.5)) is not None:
                frames.append(f)
        assert reader.ended == ""  # played to its end
    # real time, not as fast as it decodes (recent ffmpegs read the first 0.5 s at once)
    assert time.monotonic() - start >= 1.4
    assert len(frames) + reader.dropped == reader.read == 50
    assert [f.number for f in frames] == sorted(f.number for f in frames)


def test_open_source_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(VideoError, match="no such camera"):
        open_source("97")
    with pytest.raises(VideoError, match="unknown stream scheme"):
        open_source("gopher://example")
    with pytest.raises(VideoError, match="--loop is for video files"):
        open_source("udp://127.0.0.1:9", loop=True)


@pytest.mark.parametrize("args,message", [
    (["missing.mp4"], "no such file"),
    (["CLIP", "--index", "nowhere"], "no finished tile index"),
    (["CLIP", "--record", "out.webm"], "webm file cannot hold h264"),
    (["CLIP", "--record", "CLIP"], "would overwrite"),
    (["CLIP", "--grow", "CLIP"], "needs a folder"),
    (["CLIP", "--cells", "4"], "must be at least 8"),
])
def test_bad_input_is_one_line(args: list[str], message: str, tile_index: Path,
                               tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", "160x120", "25", 0.4, audio=False)
    argv = [str(clip) if a == "CLIP" else a for a in args]
    if "--index" not in argv:
        argv += ["--index", str(tile_index)]
    run = subprocess.run([sys.executable, "-m", "pipeline", "live", *argv, "--port", "0"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode in (1, 2), run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in run.stderr, \
        run.stderr


def test_render_command_runs_as_printed(tile_index: Path, tmp_path: Path) -> None:
    """The page's "copy as render command" line, run as printed in a shell, renders the
    clip with the live look (cells, blend, recolour, contrast, matching)."""
    clip = make_clip(tmp_path / "clip.mp4", "320x240", "25", 1.2)
    with LiveProcess(clip, "--index", tile_index, "--loop") as live:
        live.wait_for(lambda s: s["frames"] > 3, what="frames")
        code, reply = live.control(alpha=0.4, recolour=0.5, tone=0.5, matching="refined",
                                   cols=12)
        assert code == 200, reply
        stats = live.wait_for(lambda s: s["cells"]["cols"] == 12 and s["size"] ==
                              [12 * 32, 9 * 32], what="the new look")
        line, make = stats["commands"]["mosaic"], stats["commands"]["make"]
    env_path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    run = subprocess.run(line, shell=True, capture_output=True, text=True, cwd=tmp_path,
                         env={**_env(), "PATH": env_path}, timeout=600)
    assert run.returncode == 0, (line, run.stderr)
    out = next((Path(_env()["MOSAIC_CACHE"]) / "renders").glob("clip-*-mosaic.mp4"))
    info = probe(out)
    assert (info.width, info.height) == (12 * 32, 9 * 32)  # the live cells
    args = build_parser().parse_args(shlex.split(line)[1:])
    cfg = load_config(args.config, args.overrides, {"render.alpha": args.alpha}).render
    assert (cfg.alpha, cfg.recolour, cfg.tone, cfg.matching) == (0.4, 0.5, 0.5, "refined")
    plans = list((Path(_env()["MOSAIC_CACHE"]) / "plans").glob("*/manifest.json"))
    assert [json.loads(p.read_text())["grid"] for p in plans] == [[9, 12]]
    dry = subprocess.run(f"{make} -n", shell=True, capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "mosaic render" in dry.stdout and "--scale 1.2 --alpha 0.4" in dry.stdout


def _env() -> dict:
    import os

    return dict(os.environ)


def test_grid_type() -> None:  # the live grid plans at the processing size
    grid, scale = layout((1080, 1920), (360, 640), (32, 32), 40)
    assert isinstance(grid, Grid) and (grid.src_h, grid.src_w) == (360, 640)
    whole = make_grid(1080, 1920, (32, 32), scale)
    assert (grid.rows, grid.cols) == (whole.rows, whole.cols) == (23, 40)


def test_make_live() -> None:
    """``make live SOURCE=...`` runs ``mosaic live`` on it; without SOURCE, its usage."""
    repo = Path(__file__).parent.parent
    env = {k: v for k, v in _env().items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    run = subprocess.run(["make", "--no-print-directory", "-n", "live", "SOURCE=my clip.mp4",
                          "INDEX=ix", "ARGS=--loop --cells 20"], capture_output=True,
                         text=True, cwd=repo, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip().splitlines()[-1]
    assert shlex.split(line)[1:] == ["live", "my clip.mp4", "--index", "ix", "--loop",
                                     "--cells", "20"], line
    assert shlex.split(line)[0].endswith("mosaic")
    run = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "live"],
                         capture_output=True, text=True, cwd=repo, env=env, timeout=60)
    assert run.returncode == 2 and "usage: make live SOURCE=" in run.stderr, run.stderr
