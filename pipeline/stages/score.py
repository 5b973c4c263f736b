"""The ``score`` stage: a pure-mosaic video (made by any tool) scored against its source,
frame by frame, with the metrics of :mod:`pipeline.metrics` (tile identity from pixels).
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from pipeline.errors import VideoError
from pipeline.grid import make_grid
from pipeline.metrics import FrameScorer
from pipeline.video import FrameReader, probe
from pipeline.visibility import TileIdentifier


def score_videos(source: str, mosaic: str, scale: float, tile_hw: tuple[int, int],
                 max_frames: int | None = None, progress: bool = False,
                 bank: np.ndarray | None = None) -> dict[str, float]:
    """Score a pure-mosaic video against its source video, frame by frame.

    The cell grid is the one a render with ``scale`` and tiles of ``tile_hw`` (h, w) makes
    of the source; the mosaic must have that size. Tile identity comes from the pixels;
    with ``bank`` (N, h, w, 3) uint8, an index's tiles, each cell's tile is identified in
    it for the photo visibility score.
    """
    src_info, mos_info = probe(source), probe(mosaic)
    grid = make_grid(src_info.height, src_info.width, tile_hw, scale)
    if (mos_info.width, mos_info.height) != (grid.out_w, grid.out_h):
        raise VideoError(f"{mosaic}: {mos_info.width}x{mos_info.height} is not the "
                         f"{grid.out_w}x{grid.out_h} mosaic of {source} at scale {scale} "
                         f"with {tile_hw[1]}x{tile_hw[0]} tiles")
    count = min(src_info.frames, mos_info.frames, max_frames or src_info.frames)
    identifier = TileIdentifier(bank) if bank is not None else None
    scorer = FrameScorer(grid, identifier=identifier)
    frames = zip(FrameReader(src_info, 0, count, slack=2), FrameReader(mos_info, 0, count,
                                                                       slack=2), strict=True)
    for src, mos in tqdm(frames, total=count, desc="score", unit="frames",
                         disable=None if progress else True):
        scorer.update_pixels(src, mos)
    return scorer.scores.summary()
