"""Each tile's luma spread, recorded by the index (groups.npz) so that no render worker
measures the whole bank again; an index from before it renders the same, and a rerun of
the index stage adds it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from helpers import framemd5, make_shots

from pipeline.cache import record_artifact, write_npz
from pipeline.config import IndexConfig, RenderConfig
from pipeline.index import GROUPS, MANIFEST, load_index, load_spread
from pipeline.modes import flat_tiles
from pipeline.output import scores_path
from pipeline.stages.index import run_index
from pipeline.stages.render import run_render
from pipeline.visibility import bank_spread


def _without_spread(index: Path, to: Path) -> Path:
    """A copy of ``index`` as an index built before the spread was recorded: its
    groups.npz without it, and the manifest's record of that file."""
    shutil.copytree(index, to)
    with np.load(to / GROUPS) as z:
        kept = {k: z[k] for k in z.files if k != "spread"}
    write_npz(to / GROUPS, **kept)
    manifest = json.loads((to / MANIFEST).read_text())
    manifest["artifacts"][GROUPS] = record_artifact(to / GROUPS)
    (to / MANIFEST).write_text(json.dumps(manifest))
    return to


def test_the_index_records_each_tiles_spread(tile_index: Path) -> None:
    index = load_index(tile_index)
    assert index.spread is not None and index.spread.dtype == np.float32
    np.testing.assert_array_equal(index.spread, bank_spread(np.asarray(index.tiles)))
    assert load_spread(tile_index, len(index.tiles) + 1) is None  # another count: not its


def test_an_index_without_it_renders_the_same_and_a_rerun_adds_it(
        tile_index: Path, sample_corpus_master: Path, tmp_path: Path) -> None:
    old = _without_spread(tile_index, tmp_path / "old")
    assert load_index(old).spread is None
    for spread in (0.0, 4.0, 40.0):  # measured from the bank: the same blank tiles
        a, b = flat_tiles(load_index(old), spread), flat_tiles(load_index(tile_index), spread)
        assert (a is None and b is None) or np.array_equal(a, b)
    clip = make_shots(tmp_path / "clip.mp4", seconds=0.4)
    config = RenderConfig(scale=2, preset="ultrafast", workers=1, flat_spread=40.0)
    outs = []
    for name, index in (("new", tile_index), ("old", old)):
        out = tmp_path / f"{name}.mp4"
        run_render(str(clip), index, out, config, tmp_path / f"cache-{name}", progress=False)
        outs.append(out)
    assert framemd5(outs[0]) == framemd5(outs[1])
    assert json.loads(scores_path(outs[0]).read_text())["scores"] == \
        json.loads(scores_path(outs[1]).read_text())["scores"]
    # `mosaic index` again: only the groups step runs, and the spread is there
    report = run_index(sample_corpus_master, old, IndexConfig(clusters=8, jobs=1),
                       progress=False)
    assert not report.up_to_date and not report.repaired
    np.testing.assert_array_equal(load_index(old).spread, load_index(tile_index).spread)
    for name in ("tiles.npy", "clusters.npz"):
        assert (old / name).read_bytes() == (tile_index / name).read_bytes()
