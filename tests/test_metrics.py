"""Metrics on synthetic cases with known answers."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from helpers import reference_lab as srgb_to_lab
from helpers import score_ids

from pipeline.grid import make_grid
from pipeline.metrics import FrameScorer, identical_neighbour_share, ssim


def test_mosaic_equal_to_the_upscaled_source_scores_perfectly() -> None:
    rng = np.random.default_rng(0)
    src = cv2.GaussianBlur(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), (5, 5), 2)
    grid = make_grid(60, 80, (8, 8), 4)  # 30 x 40 cells of 8x8: exact 4x upscale
    up = cv2.resize(src, (grid.out_w, grid.out_h), interpolation=cv2.INTER_NEAREST)
    scorer = FrameScorer(grid)
    scorer.update_pixels(src, up)
    s = scorer.scores.summary()
    assert s["delta_e_cell"] < 0.05 and s["delta_e_subgrid"] < 0.05
    assert s["ssim_view"] > 0.999


@pytest.mark.parametrize(("offset", "tolerance"), [
    ((30, 30, 30), 0.02),  # grey 100 -> grey 130: a pure lightness step
    ((0, 30, 0), 0.02),  # green raised
])
def test_constant_colour_offset_gives_its_delta_e(offset: tuple[int, int, int],
                                                  tolerance: float) -> None:
    grid = make_grid(16, 16, (8, 8), 1)
    src = np.full((16, 16, 3), 100, np.uint8)
    mosaic = (src + np.array(offset)).astype(np.uint8)
    scorer = FrameScorer(grid)
    scorer.update_pixels(src, mosaic)
    expected = np.linalg.norm(srgb_to_lab(np.array([100, 100, 100]) / 255)
                              - srgb_to_lab((100 + np.array(offset)) / 255))
    s = scorer.scores.summary()
    assert s["delta_e_cell"] == pytest.approx(expected, abs=tolerance)
    assert s["delta_e_subgrid"] == pytest.approx(expected, abs=tolerance)


def test_flickering_cells_are_churn_and_flicker() -> None:
    grid = make_grid(16, 32, (8, 8), 1)  # 2 x 4 cells
    src = np.full((16, 32, 3), 90, np.uint8)  # static source
    a = np.zeros((16, 32, 3), np.uint8)
    b = a.copy()
    b[:8, :8] = 40  # cell (0, 0) alternates between 0 and 40
    ids_a = np.arange(8).reshape(2, 4)
    ids_b = ids_a.copy()
    ids_b[0, 0] = 99
    for ids in (None, "ids"):
        scorer = FrameScorer(grid)
        prev = None
        for t in range(5):
            frame, tiles = (a, ids_a) if t % 2 == 0 else (b, ids_b)
            if ids:
                score_ids(scorer, src, frame, tiles, prev)
            else:
                scorer.update_pixels(src, frame)
            prev = frame
        s = scorer.scores.summary()
        assert s["static_cells"] == 4 * 8  # 4 transitions x 8 cells
        assert s["churn"] == pytest.approx(1 / 8)  # one cell of eight changes every frame
        assert s["flicker"] == pytest.approx(40 / 8)  # mean |change| over static cells


def test_variety_counts() -> None:
    grid = make_grid(16, 24, (8, 8), 1)  # 2 x 3 cells
    ids = np.array([[1, 1, 2], [3, 4, 2]])  # (0,0)=(0,1) and (0,2)=(1,2)
    scorer = FrameScorer(grid)
    score_ids(scorer, np.zeros((16, 24, 3), np.uint8), np.zeros((16, 24, 3), np.uint8), ids)
    s = scorer.scores.summary()
    assert s["distinct_tiles"] == 4
    assert s["identical_neighbours"] == pytest.approx(4 / 6)
    assert identical_neighbour_share(np.zeros((2, 2), bool), np.zeros((1, 3), bool)) == 0


def test_ssim_known_values() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (32, 32)).astype(np.float32)
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, 255 - x) < 0


def test_score_command_on_videos(tmp_path, run_cli, tile_index, clip_with_audio) -> None:
    from helpers import ffmpeg

    up = tmp_path / "up.mkv"  # the source itself, upscaled x2: a perfect "mosaic"
    ffmpeg("-i", clip_with_audio, "-vf", "scale=320:256:flags=neighbor", "-c:v", "ffv1", up)
    code, out, err = run_cli("score", clip_with_audio, up, "--scale", "2", "--tile", "32x32",
                             "-q")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["frames"] == 50 and scores["delta_e_cell"] < 1.5 and scores["ssim_view"] > 0.9
    code, _, err = run_cli("score", clip_with_audio, up, "--scale", "4", "-q")
    assert code == 1 and "is not the 640x480 mosaic" in err
    # a pure-mosaic render scores close to what the render itself reported
    render = tmp_path / "m.mp4"
    code, _, err = run_cli("render", clip_with_audio, "--index", tile_index, "--out", render,
                           "--scale", "2", "--alpha", "0", "--preset", "ultrafast", "-q",
                           "--set", "render.crf=10")
    assert code == 0, err
    own = json.loads((tmp_path / "m.mp4.scores.json").read_text())["scores"]
    code, out, _ = run_cli("score", clip_with_audio, render, "--scale", "2", "-q")
    theirs = json.loads(out)
    assert abs(theirs["delta_e_cell"] - own["delta_e_cell"]) < 1.0
    assert abs(theirs["ssim_view"] - own["ssim_view"]) < 0.05


def _painted_scores(paint, segments, every: int, per_frame: dict | None = None):
    """The scores of every segment painted in this process with ``score_every`` = every
    (as a painter adds the pure mosaic's visibility on each scored frame); with
    ``per_frame``, each frame's own sums by frame number (every = 1)."""
    import dataclasses

    from pipeline.metrics import Scores
    from pipeline.paint import Painter
    from pipeline.planfile import chunk_path, read_chunk

    job, total = dataclasses.replace(paint, score_every=every), Scores()
    for seg in segments:
        painter = Painter(job, seg, read_chunk(chunk_path(job.plan_dir, seg.number),
                                               job.plan_key))
        before = json.loads(json.dumps(painter.scorer.scores.to_json()))
        for i, _ in enumerate(painter.frames()):
            if painter.scored:
                painter.scorer.scores.add_visibility(painter.canvas.own, painter.canvas.spread)
            if per_frame is not None:
                now = json.loads(json.dumps(painter.scorer.scores.to_json()))
                per_frame[seg.start + i] = (before, now)
                before = now
        total.add(painter.scorer.scores)
    return total


def test_a_sample_of_frames_scores_as_those_frames_do_in_every_frames_scores(
        tmp_path, run_cli, tile_index, monkeypatch) -> None:
    """``render.score_every`` = 3 scores frames 0, 3, 6...: each exactly as the scores of
    every frame count it (churn and flicker against the frame before it, the canvas's
    cells measured only when a scored frame shows them), across the job's segments."""
    from helpers import make_clip

    import pipeline.stages.render as render_stage

    seen = {}
    prepare = render_stage._prepare

    def keep(paint, plan, segments, report):  # the painters' job, as the render made it
        seen.update(paint=paint, segments=segments)
        return prepare(paint, plan, segments, report)

    monkeypatch.setattr(render_stage, "_prepare", keep)
    clip = make_clip(tmp_path / "clip.mp4", seconds=2.0, audio=False)
    code, _, err = run_cli("render", clip, "--index", tile_index, "--out", tmp_path / "o.mp4",
                           "--set", "render.workers=1", "--set", "render.segment_frames=32")
    assert code == 0, err
    assert len(seen["segments"]) >= 2 and seen["segments"][1].start % 3 != 0
    frames: dict = {}
    every = _painted_scores(seen["paint"], seen["segments"], 1, frames).to_json()
    sample = _painted_scores(seen["paint"], seen["segments"], 3).to_json()
    assert every["frames"] == 50 and sample["frames"] == 17 and sample["every"] == 3
    assert every["static_cells"] > sample["static_cells"] > 0
    for name, value in sample.items():
        if name in ("every", "by_id", "identified_cells"):
            continue
        want = 0 if not isinstance(value, list) else np.zeros(len(value), np.int64)
        for number in range(0, 50, 3):
            before, now = frames[number]
            want = want + (np.asarray(now[name]) - np.asarray(before[name] or 0))
        np.testing.assert_allclose(np.asarray(value, float), np.asarray(want, float),
                                   rtol=1e-9, err_msg=name)
