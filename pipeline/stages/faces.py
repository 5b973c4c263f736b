"""The ``faces`` stage: a photo folder -> a folder of face tiles that indexes directly.

Steps: take the output's lock; scan the source folder (as the index stage does); cut
the files into chunks and skip every chunk whose record is already in ``OUT/.faces/``
(same files, sizes, times and options: a killed run resumes, a rerun does nothing);
detect, filter and crop the faces of the others in parallel (joblib processes, a
progress bar), each chunk writing its crops and then its record; then, over all
records in path order, drop duplicates by content (byte-identical sources, crops with
equal perceptual hashes), remove crops no record keeps (an earlier run's, with other
options), and write ``bad_files.tsv`` and, last, ``manifest.json``: every kept crop with
its source file, face box and crop box, and the counts.

Crops are ``face-<source digest>-<n>.jpg`` at the top of OUT; ``mosaic index --corpus
OUT`` reads them like any image folder (the dot-directory with the records is skipped).

OUT is the tool's: new, empty, or made by this command (it carries the tool's marker);
another folder only with ``force``. Only crops the tool can prove it wrote are ever
removed: each crop's name is appended to its chunk's journal (``.faces/written-*.txt``)
before the crop is written, and kept in the chunk's record after; a ``face-*.jpg`` named
in neither (the user's own) is never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import joblib
import numpy as np
from tqdm import tqdm

from pipeline import faces as fc
from pipeline.cache import (
    MARKER,
    atomic_output,
    digest_bytes,
    digest_text,
    mark_owned,
    owned_kind,
    temp_final_name,
    write_json,
)
from pipeline.corpus import FileEntry, _to_bgr8, read_image_bytes, scan_corpus_report
from pipeline.errors import CorpusError, OutputError
from pipeline.groups import perceptual_hashes
from pipeline.imagesize import pixel_problem
from pipeline.locks import file_lock

log = logging.getLogger(__name__)

VERSION = "2"  # bump when detection or cropping changes: invalidates the records (2: YuNet)
STATE = ".faces"
MANIFEST = "manifest.json"
BAD_FILES = "bad_files.tsv"
CHUNK = 16  # source files per record: a killed run redoes at most this many per worker
JOURNAL = "written-{}.txt"  # per chunk: the crops it is writing, each named before it is
CROP = re.compile(r"face-[0-9a-f]{16}-\d+\.jpg")
_OUT_NAMES = (MANIFEST, BAD_FILES)


@dataclass
class FacesReport:
    """Counts of a run (see the module doc) and where the manifest is."""

    manifest: Path
    counts: dict[str, int] = field(default_factory=dict)
    redone: int = 0
    up_to_date: bool = False


def _params(opts: fc.FaceOptions) -> str:
    return json.dumps(dataclasses.asdict(opts), sort_keys=True)


def chunk_key(entries: list[FileEntry], opts: fc.FaceOptions) -> str:
    """The digest naming one chunk's record: version, options, files, sizes and times."""
    files = "\n".join(f"{e.path}\t{e.size}\t{e.mtime_ns}" for e in entries)
    return digest_text(VERSION, _params(opts), files)


def read_source(path: str) -> tuple[np.ndarray, str]:
    """A source photo as BGR uint8 (H, W, 3) and its content digest; ValueError with
    the reason when it is unusable (also a special file, or over the pixel limit: its
    header is read before it is decoded)."""
    data = read_image_bytes(path)
    if isinstance(data, str):
        raise ValueError(data)
    if (problem := pixel_problem(data)) is not None:
        raise ValueError(problem)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        raise ValueError("not a decodable image")
    return _to_bgr8(img), digest_bytes(data)


def faces_of(path: str, out_dir: Path, opts: fc.FaceOptions, journal=None) -> dict:
    """Detect, filter and crop one source; writes its crops (each named in ``journal``,
    an open text file, before it is written); its record entry."""
    try:
        image, digest = read_source(path)
    except ValueError as exc:
        return {"path": path, "bad": str(exc)}
    found, counts = fc.find_faces(image, opts)
    faces = []
    for n, face in enumerate(found):
        crop = fc.cut(image, face, opts.size)
        name = f"face-{digest[:16]}-{n}.jpg"
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, opts.quality])
        if not ok:
            raise OutputError(f"{path}: JPEG encoding of a crop failed")
        if journal is not None:
            journal.write(name + "\n")
            journal.flush()
        with atomic_output(out_dir / name) as f:
            f.write(buf.tobytes())
        phash = int(perceptual_hashes(crop[None])[0][0])
        faces.append({"file": name, "box": list(face.box), "crop": list(face.crop),
                      "phash": f"{phash:016x}"})
    return {"path": path, "digest": digest, **counts, "faces": faces}


def run_chunk(entries: list[FileEntry], out_dir: Path, opts: fc.FaceOptions) -> dict:
    """Process one chunk and write its record last (atomically); the record. The names
    of the crops go into the chunk's journal first (:data:`JOURNAL`)."""
    cv2.setNumThreads(1)
    key = chunk_key(entries, opts)
    with open(out_dir / STATE / JOURNAL.format(key), "a") as journal:
        record = {"key": key,
                  "sources": [faces_of(e.path, out_dir, opts, journal) for e in entries]}
    write_json(out_dir / STATE / f"chunk-{record['key']}.json", record)
    return record


def _load_record(path: Path, key: str) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("key") == key else None


def _check_dirs(src: Path, out: Path, force: bool) -> None:
    """Refuse an OUT inside the sources, inside an index or the cache's working folders,
    a file, or (unless ``force``) a folder of other files not made by this command."""
    from pipeline.output import managed_place

    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents:
        raise CorpusError(f"{out}: the output folder is inside the source folder {src}; "
                          "its crops would be read as photos; choose another --out")
    if (place := managed_place(out / "x")) is not None and owned_kind(out) != "faces":
        raise OutputError(f"{out}: is inside {place}; choose another --out")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file, not a folder; choose another --out")
    kind = owned_kind(out) if out.is_dir() else "faces"
    # a folder holding only what this command writes: made before markers existed, or
    # being made by a run right now
    ours = kind is not None or all(_written_here(p.name) for p in out.iterdir())
    if not ours and not force:
        raise OutputError(f"{out}: exists and holds files this command did not write; "
                          "choose a new or empty folder, or add --force to write the face "
                          "tiles among them (they are left alone)")
    if kind not in (None, "faces"):
        raise OutputError(f"{out}: is a {kind} folder of this tool; choose another --out")


def _written_here(name: str) -> bool:
    """Whether ``name`` is one this command writes at the top of its folder (or a
    temporary file of one)."""
    final = temp_final_name(name) or name
    return final in (STATE, MARKER, MANIFEST, BAD_FILES) or bool(CROP.fullmatch(final))


def run_faces(src: str | Path, out: str | Path, opts: fc.FaceOptions, jobs: int = 0,
              progress: bool = False, force: bool = False) -> FacesReport:
    """Build the face-tile folder ``out`` from the photos under ``src`` (module doc)."""
    src, out = Path(src), Path(out)
    _check_dirs(src, out, force)  # before the scan: cheap checks first
    entries = scan_corpus_report(src)[0]
    if not entries:
        raise CorpusError(f"{src}: no image files found (looked for jpg, jpeg, png, webp, "
                          "bmp, tif)")
    (out / STATE).mkdir(parents=True, exist_ok=True)
    with file_lock(out / STATE / ".lock", f"the face folder {out}"):
        mark_owned(out, "faces")
        for tmp in out.glob(".*.tmp"):  # left by a killed run (we hold the lock)
            final = temp_final_name(tmp.name) or ""
            if CROP.fullmatch(final) or final in _OUT_NAMES:
                tmp.unlink(missing_ok=True)
        chunks = [entries[i:i + CHUNK] for i in range(0, len(entries), CHUNK)]
        keys = [chunk_key(c, opts) for c in chunks]
        records = {k: _load_record(out / STATE / f"chunk-{k}.json", k) for k in keys}
        todo = [c for c, k in zip(chunks, keys, strict=True) if records[k] is None]
        log.info("%d photos, %d to scan for faces, %d done before", len(entries),
                 sum(map(len, todo)), len(entries) - sum(map(len, todo)))
        for record in _process(todo, out, opts, jobs, progress):
            records[record["key"]] = record
        report = _finish(out, [records[k] for k in keys], opts)
        report.redone = sum(map(len, todo))
        report.up_to_date = not todo
        return report


def _process(todo: list[list[FileEntry]], out: Path, opts: fc.FaceOptions, jobs: int,
             progress: bool):
    """Run the chunks (in parallel when there are several); yields their records."""
    if not todo:
        return
    n_jobs = min(jobs or os.cpu_count() or 1, len(todo))
    bar = tqdm(total=sum(map(len, todo)), desc="faces", unit="img", disable=not progress)
    with bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joblib's worker-shutdown chatter on errors
        if n_jobs == 1:
            results = (run_chunk(c, out, opts) for c in todo)
        else:
            results = joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                joblib.delayed(run_chunk)(c, out, opts) for c in todo)
        for record in results:
            bar.update(len(record["sources"]))
            yield record


def _written(out: Path, records: list[dict]) -> tuple[set[str], list[Path]]:
    """The crops this command provably wrote into ``out``: named in a record (this run's
    or an older one's) or in a journal; and the old records and the journals."""
    names = {f["file"] for r in records for s in r["sources"] for f in s.get("faces", [])}
    keys = {r["key"] for r in records}
    done = []
    for old in (out / STATE).glob("chunk-*.json"):
        if old.stem.removeprefix("chunk-") not in keys:
            record = _load_record(old, old.stem.removeprefix("chunk-")) or {}
            names |= {f.get("file") for s in record.get("sources", [])
                      for f in s.get("faces", [])}
            done.append(old)
    for journal in (out / STATE).glob(JOURNAL.format("*")):
        with contextlib.suppress(OSError):
            names |= set(journal.read_text().split())
        done.append(journal)
    return {n for n in names if isinstance(n, str) and CROP.fullmatch(n)}, done


def _prune(out: Path, records: list[dict], keep: set[str]) -> None:
    """Remove the crops this command wrote that are not kept (duplicates, crops of other
    options or of killed runs), then the old records and the journals; nothing else."""
    written, done = _written(out, records)
    for name in written - keep:
        (out / name).unlink(missing_ok=True)
    for path in done:
        with contextlib.suppress(OSError):
            path.unlink()


def _finish(out: Path, records: list[dict], opts: fc.FaceOptions) -> FacesReport:
    """Deduplicate, prune stale crops, write bad_files.tsv and the manifest (last)."""
    counts = dict.fromkeys(("photos", "bad", "detected", "no_eyes",
                            "duplicate_photos", "duplicate_faces", "faces"), 0)
    seen_sources: set[str] = set()
    seen_hashes: set[str] = set()
    kept, bad = [], []
    for source in (s for r in records for s in r["sources"]):
        counts["photos"] += 1
        if "bad" in source:
            bad.append((source["path"], source["bad"]))
            continue
        counts["detected"] += source["found"]
        counts["no_eyes"] += source["no_eyes"]
        if source["digest"] in seen_sources:
            counts["duplicate_photos"] += 1
            continue
        seen_sources.add(source["digest"])
        for face in source["faces"]:
            if face["phash"] in seen_hashes:
                counts["duplicate_faces"] += 1
                continue
            seen_hashes.add(face["phash"])
            kept.append({"file": face["file"], "source": source["path"],
                         "box": face["box"], "crop": face["crop"]})
    counts["bad"] = len(bad)
    counts["faces"] = len(kept)
    _prune(out, records, {f["file"] for f in kept})
    with atomic_output(out / BAD_FILES, "w") as f:
        f.write("path\treason\n")
        f.writelines(f"{p}\t{why}\n" for p, why in bad)
    manifest = {"version": VERSION, "params": json.loads(_params(opts)), "counts": counts,
                "faces": kept}
    write_json(out / MANIFEST, manifest)
    return FacesReport(out / MANIFEST, counts)
