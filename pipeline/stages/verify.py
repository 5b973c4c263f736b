"""``mosaic verify --renders``: every cached plan chunk and painted segment checked
against the whole-file digests recorded when it was written.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cache import artifact_problem, owned_kind
from pipeline.ownership import read_json
from pipeline.planfile import MANIFEST, chunk_path
from pipeline.stages.render import DONE


def verify_renders(cache_dir: str | Path) -> dict[str, str]:
    """Fully check every plan chunk and painted segment under ``cache_dir`` against the
    whole-file digests recorded when they were written.

    Only the tool's own plan and job folders are looked at (marked, or named by the key
    their records hold), and only their own record files. A damaged one loses its record
    (the plan's manifest, the segment's ``.json``), so the next run of its render redoes
    just it. Returns ``{file path: problem}``.
    """
    cache_dir, problems = Path(cache_dir), {}
    for manifest in sorted(cache_dir.glob(f"plans/*/{MANIFEST}")):
        plan = read_json(manifest)
        if owned_kind(manifest.parent) != "plan" and plan.get("key") != manifest.parent.name:
            continue
        for number, record in enumerate(plan.get("chunks", [])):
            chunk = chunk_path(manifest.parent, number)
            if (problem := artifact_problem(chunk, record, full=True)) is not None:
                problems[str(chunk)] = problem
                chunk.unlink(missing_ok=True)
                manifest.unlink(missing_ok=True)
    for record in sorted(cache_dir.glob("render/*/seg-[0-9][0-9][0-9][0-9][0-9].json")):
        stats = read_json(record)
        if owned_kind(record.parent) != "job" and stats.get("key") != record.parent.name:
            continue
        video = record.with_suffix(".mp4")
        if (problem := artifact_problem(video, stats.get("video"), full=True)) is not None:
            problems[str(video)] = problem
            record.unlink(missing_ok=True)
            (record.parent / DONE).unlink(missing_ok=True)
    return problems
