"""Shot boundaries (pipeline.shots): the planner's scene-cut rule as a state-free pass
over frame ranges, sequential and in parallel, on a clip made of known shots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import ffmpeg

from pipeline.activity import Activity, cell_lab
from pipeline.config import RenderConfig
from pipeline.errors import VideoError
from pipeline.grid import make_grid
from pipeline.shots import (
    cut_shares,
    find_cuts,
    find_cuts_parallel,
    shot_starts,
    split_even,
    split_range,
)
from pipeline.video import iter_frames, probe

W, H, RATE = 160, 120, 25
# the shots: (lavfi source, frames); a new shot starts at 25, 40 and 50
SHOTS = (("testsrc2", 25), ("smptebars", 15), ("color=c=0x3050c0", 10), ("testsrc", 20))
CUTS = [25, 40, 50]
FRAMES = sum(n for _, n in SHOTS)


@pytest.fixture(scope="module")
def shots_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four lavfi shots joined (H.264, a keyframe every 8 frames: ranges start mid-GOP),
    with an AAC tone that starts with the video (where a seek without ``exact`` decoding
    comes one frame late)."""
    out = tmp_path_factory.mktemp("shots") / "shots.mp4"
    chains = [f"{src}{':' if '=' in src else '='}size={W}x{H}:rate={RATE},"
              f"trim=end_frame={n},setpts=PTS-STARTPTS,format=yuv420p[v{k}]"
              for k, (src, n) in enumerate(SHOTS)]
    graph = ";".join(chains) + ";" + "".join(f"[v{k}]" for k in range(len(SHOTS))) + \
        f"concat=n={len(SHOTS)}:v=1:a=0[v]"
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration="
           f"{FRAMES / RATE}", "-filter_complex", graph, "-map", "[v]", "-map", "0:a",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "8", "-pix_fmt", "yuv420p",
           "-c:a", "aac", out)
    return out


@pytest.fixture(scope="module")
def grid():
    return make_grid(H, W, (32, 32), 4.0)  # the render's default grid: 20 x 15 cells


def test_the_clip_holds_the_planned_frames(shots_clip: Path) -> None:
    info = probe(shots_clip)
    assert info.frames == FRAMES and info.audio


def test_cuts_are_found_at_the_joins_and_only_there(shots_clip: Path, grid) -> None:
    assert find_cuts(shots_clip, grid, 0, FRAMES, 0.6) == CUTS
    shares = cut_shares(shots_clip, grid, 0, FRAMES)
    assert shares.shape == (FRAMES,) and shares.dtype == np.float32
    assert (shares[CUTS] > 0.9).all()  # the joins move nearly every cell
    others = np.delete(shares, CUTS)
    assert others.max() < 0.2  # testsrc2's motion moves a few cells, never a cut's share
    # a stricter threshold than any join's share finds nothing
    assert find_cuts(shots_clip, grid, 0, FRAMES, float(shares.max())) == []


def test_the_pass_agrees_with_the_planners_rule_frame_by_frame(shots_clip: Path,
                                                                grid) -> None:
    """The plan's :class:`Activity` (default options, a canvas with tiles) flags the
    same frames as cuts as the state-free pass."""
    cfg = RenderConfig()
    activity = Activity(grid, cfg.activity_threshold, cfg.active_fraction, cfg.settle,
                        cfg.scene_cut)
    flagged = [i for i, frame in enumerate(iter_frames(shots_clip))
               if activity.decide(frame, cell_lab(frame, grid)).cut]
    assert flagged == find_cuts(shots_clip, grid, 0, FRAMES, cfg.scene_cut) == CUTS


def test_a_cut_at_a_ranges_start_is_found(shots_clip: Path, grid) -> None:
    assert find_cuts(shots_clip, grid, 40, 45, 0.6) == [40]
    assert find_cuts(shots_clip, grid, 41, 50, 0.6) == []
    assert find_cuts(shots_clip, grid, 0, 25, 0.6) == []  # stops before the first cut
    assert find_cuts(shots_clip, grid, 25, 26, 0.6) == [25]  # a one-frame range


def test_parallel_over_ranges_equals_one_sequential_pass(shots_clip: Path, grid) -> None:
    sequential = find_cuts(shots_clip, grid, 0, FRAMES, 0.6)
    # boundaries exactly at two cuts (25, 40), one just after (51), one mid-shot (13)
    ranges = [(0, 13), (13, 25), (25, 40), (40, 51), (51, FRAMES)]
    info = probe(shots_clip)
    assert find_cuts_parallel(info, grid, ranges, 0.6, workers=2) == sequential
    assert find_cuts_parallel(shots_clip, grid, ranges, 0.6, workers=1) == sequential
    # each range's decoder held to one thread (a local worker's share): the same cuts
    assert find_cuts_parallel(info, grid, ranges, 0.6, workers=2, threads=1) == sequential
    for size in (1, 7, 25, FRAMES):
        assert find_cuts_parallel(info, grid, split_range(0, FRAMES, size), 0.6,
                                  workers=2) == sequential, size


def test_empty_ranges_give_no_cuts(shots_clip: Path, grid) -> None:
    assert find_cuts(shots_clip, grid, 30, 30, 0.6) == []
    assert cut_shares(shots_clip, grid, FRAMES, FRAMES).shape == (0,)
    assert find_cuts_parallel(shots_clip, grid, [], 0.6) == []
    assert find_cuts_parallel(shots_clip, grid, [(5, 5), (40, 40)], 0.6) == []
    assert split_range(10, 10, 4) == [] and split_even(3, 3, 2) == []


def test_a_range_past_the_end_is_refused_in_one_line(shots_clip: Path, grid) -> None:
    with pytest.raises(VideoError, match=rf"shots\.mp4: frames \[60, {FRAMES + 1}\) run "
                       rf"past the end of the video \({FRAMES} frames\)"):
        find_cuts(shots_clip, grid, 60, FRAMES + 1, 0.6)
    with pytest.raises(VideoError, match="not a range"):
        find_cuts(shots_clip, grid, 10, 5, 0.6)
    # the parallel pass checks every range before any work
    with pytest.raises(VideoError, match="past the end"):
        find_cuts_parallel(shots_clip, grid, [(0, 10), (FRAMES, FRAMES + 3)], 0.6)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        find_cuts_parallel(shots_clip, grid, [(0, 10)], 0.6, workers=0)


def test_a_grid_for_another_size_is_refused(shots_clip: Path) -> None:
    with pytest.raises(VideoError, match=r"160x120 frames, but the grid is laid out for "
                       r"320x240"):
        find_cuts(shots_clip, make_grid(240, 320, (32, 32), 4.0), 0, 10, 0.6)


def test_ranges_split_consecutively() -> None:
    assert split_range(3, 13, 4) == [(3, 7), (7, 11), (11, 13)]
    assert split_even(0, 10, 3) == [(0, 4), (4, 8), (8, 10)]
    assert split_even(0, 2, 5) == [(0, 1), (1, 2)]
    with pytest.raises(ValueError):
        split_range(0, 10, 0)


def test_short_shots_stay_with_the_one_before() -> None:
    """A cut starts a shot planned on its own only when the shot before and the one it
    starts are both at least min_frames long; 0 plans the whole range as one."""
    cuts = [10, 40, 45, 100]
    assert shot_starts(cuts, 0, 120, 32) == [40]  # 10: too soon; 45: too soon; 100: too late
    assert shot_starts(cuts, 0, 140, 32) == [40, 100]
    assert shot_starts(cuts, 0, 120, 8) == [10, 40, 100]
    # under 8 frames, 8: a segment of a frame or two cannot be joined after a long one
    assert shot_starts(cuts, 0, 120, 5) == shot_starts(cuts, 0, 120, 8)
    assert shot_starts(cuts, 0, 120, 0) == []
    assert shot_starts([], 0, 120, 32) == []
