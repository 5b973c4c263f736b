"""Contact sheet of a tile index: one row per kept cluster, largest first.

Each row shows the cluster's number and population, then sample tiles spread evenly over
its members. It is the picture to look at before committing a corpus to an overnight
render: are the clusters coherent in colour, is anything odd in the corpus?
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.cache import atomic_output
from pipeline.index import TileIndex

LABEL_WIDTH = 150


def contact_sheet(index: TileIndex, samples: int = 16, max_rows: int | None = None,
                  zoom: int = 1) -> np.ndarray:
    """Draw the contact sheet of ``index``.

    Returns
    -------
    ndarray of shape (rows * row_h, LABEL_WIDTH + samples * tile_w, 3), uint8 BGR, with
    ``row_h = max(tile_h * zoom, 24)``.
    """
    if samples < 1:
        raise ValueError(f"'samples' must be at least 1, got {samples}")
    order = np.argsort(-index.populations, kind="stable")
    if max_rows is not None:
        order = order[:max_rows]
    th, tw = (s * zoom for s in index.tiles.shape[1:3])
    row_h = max(th, 24)
    sheet = np.full((len(order) * row_h, LABEL_WIDTH + samples * tw, 3), 32, dtype=np.uint8)
    for r, cluster in enumerate(order):
        members = index.members(int(cluster))
        picks = members[np.linspace(0, len(members) - 1, min(samples, len(members))).astype(int)]
        tiles = np.asarray(index.tiles[np.sort(picks)])
        if zoom > 1:
            tiles = tiles.repeat(zoom, axis=1).repeat(zoom, axis=2)
        top = r * row_h
        for j, tile in enumerate(tiles):
            sheet[top:top + th, LABEL_WIDTH + j * tw:LABEL_WIDTH + (j + 1) * tw] = tile
        text = f"#{int(cluster)}  n={len(members)}"
        cv2.putText(sheet, text, (6, top + row_h // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (230, 230, 230), 1, cv2.LINE_AA)
    return sheet


def write_contact_sheet(index: TileIndex, out: str | Path, samples: int = 16,
                        max_rows: int | None = None, zoom: int = 1) -> Path:
    """Draw the contact sheet and write it atomically as PNG to ``out``."""
    out = Path(out)
    sheet = contact_sheet(index, samples, max_rows, zoom)
    ok, buf = cv2.imencode(".png", sheet)
    if not ok:
        raise ValueError(f"{out}: cannot encode the contact sheet as PNG")
    with atomic_output(out) as f:
        f.write(buf.tobytes())
    return out
