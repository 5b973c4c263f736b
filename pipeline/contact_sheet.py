"""Contact sheet of a tile index: one row per kept cluster, largest first.

Each row shows the cluster's number and population, then sample tiles spread evenly over
its members. It is the picture to look at before committing a corpus to an overnight
render: are the clusters coherent in colour, is anything odd in the corpus?

The sheet's size is checked before it is drawn (:data:`MAX_SHEET_PIXELS`); it is written
as PNG or JPEG by its extension, never over an input or inside the index.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.cache import atomic_output
from pipeline.errors import OutputError
from pipeline.index import TileIndex

LABEL_WIDTH = 150
MAX_SHEET_PIXELS = 250_000_000  # 750 MB of pixels: far more than a screen shows
FORMATS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}


def sheet_shape(index: TileIndex, samples: int, max_rows: int | None, zoom: int
                ) -> tuple[int, int]:
    """(height, width) of the contact sheet, computed without drawing it."""
    rows = len(index.populations) if max_rows is None else min(max_rows,
                                                               len(index.populations))
    th, tw = (s * zoom for s in index.tiles.shape[1:3])
    return rows * max(th, 24), LABEL_WIDTH + samples * tw


def check_sheet(index: TileIndex, samples: int, max_rows: int | None, zoom: int) -> None:
    """Refuse a sheet over :data:`MAX_SHEET_PIXELS` in one line, before any allocation."""
    h, w = sheet_shape(index, samples, max_rows, zoom)
    if h * w > MAX_SHEET_PIXELS:
        raise OutputError(f"a contact sheet of {w}x{h} pixels is over the limit of "
                          f"{MAX_SHEET_PIXELS // 1_000_000} megapixels; lower --zoom or "
                          "--samples, or show fewer clusters with --max-rows")


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
    check_sheet(index, samples, max_rows, zoom)
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
                        max_rows: int | None = None, zoom: int = 1, force: bool = False
                        ) -> Path:
    """Draw the contact sheet and write it atomically to ``out``, as PNG or JPEG by its
    extension; ``out`` is checked first (:func:`pipeline.output.check_output`: never a
    file of the index or a place inside it; another kind of file only with ``force``)."""
    from pipeline.output import check_output

    out = Path(out)
    check_output(out, [p for p in Path(index.path).glob("*") if p.is_file()], kind="image",
                 force=force)
    ext = FORMATS.get(out.suffix.lower())
    if ext is None:
        raise OutputError(f"{out}: a contact sheet is written as .png or .jpg, not "
                          f"{out.suffix or '(no extension)'!r}")
    sheet = contact_sheet(index, samples, max_rows, zoom)
    ok, buf = cv2.imencode(ext, sheet)
    if not ok:
        raise OutputError(f"{out}: cannot encode the contact sheet")
    with atomic_output(out) as f:
        f.write(buf.tobytes())
    return out
