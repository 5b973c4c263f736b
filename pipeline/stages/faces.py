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
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import joblib
import numpy as np
from tqdm import tqdm

from pipeline import faces as fc
from pipeline.cache import atomic_output, digest_bytes, digest_text, file_lock, write_json
from pipeline.corpus import FileEntry, _to_bgr8, scan_corpus_report
from pipeline.errors import CorpusError
from pipeline.groups import perceptual_hashes

log = logging.getLogger(__name__)

VERSION = "2"  # bump when detection or cropping changes: invalidates the records (2: YuNet)
STATE = ".faces"
MANIFEST = "manifest.json"
BAD_FILES = "bad_files.tsv"
CHUNK = 16  # source files per record: a killed run redoes at most this many per worker


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
    the reason when it is unusable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror or exc}") from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError("not a decodable image")
    return _to_bgr8(img), digest_bytes(data)


def faces_of(path: str, out_dir: Path, opts: fc.FaceOptions) -> dict:
    """Detect, filter and crop one source; writes its crops; its record entry."""
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
            raise RuntimeError(f"{path}: JPEG encoding of a crop failed")
        with atomic_output(out_dir / name) as f:
            f.write(buf.tobytes())
        phash = int(perceptual_hashes(crop[None])[0][0])
        faces.append({"file": name, "box": list(face.box), "crop": list(face.crop),
                      "phash": f"{phash:016x}"})
    return {"path": path, "digest": digest, **counts, "faces": faces}


def run_chunk(entries: list[FileEntry], out_dir: Path, opts: fc.FaceOptions) -> dict:
    """Process one chunk and write its record last (atomically); the record."""
    cv2.setNumThreads(1)
    record = {"key": chunk_key(entries, opts),
              "sources": [faces_of(e.path, out_dir, opts) for e in entries]}
    write_json(out_dir / STATE / f"chunk-{record['key']}.json", record)
    return record


def _load_record(path: Path, key: str) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("key") == key else None


def _check_dirs(src: Path, out: Path) -> None:
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents:
        raise CorpusError(f"{out}: the output folder is inside the source folder {src}; "
                          "its crops would be read as photos; choose another --out")


def run_faces(src: str | Path, out: str | Path, opts: fc.FaceOptions, jobs: int = 0,
              progress: bool = False) -> FacesReport:
    """Build the face-tile folder ``out`` from the photos under ``src`` (module doc)."""
    src, out = Path(src), Path(out)
    entries = scan_corpus_report(src)[0]
    if not entries:
        raise CorpusError(f"{src}: no image files found (looked for jpg, jpeg, png, webp, "
                          "bmp, tif)")
    _check_dirs(src, out)
    (out / STATE).mkdir(parents=True, exist_ok=True)
    with file_lock(out / STATE / ".lock", f"the face folder {out}"):
        for tmp in out.glob(".*.tmp"):  # left by a killed run (we hold the lock)
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
    names = {f["file"] for f in kept}
    for crop in out.glob("face-*.jpg"):  # duplicates, and crops of other options
        if crop.name not in names:
            crop.unlink(missing_ok=True)
    keys = {r["key"] for r in records}
    for old in (out / STATE).glob("chunk-*.json"):
        if old.stem.removeprefix("chunk-") not in keys:
            with contextlib.suppress(OSError):
                old.unlink()
    with atomic_output(out / BAD_FILES, "w") as f:
        f.write("path\treason\n")
        f.writelines(f"{p}\t{why}\n" for p, why in bad)
    manifest = {"version": VERSION, "params": json.loads(_params(opts)), "counts": counts,
                "faces": kept}
    write_json(out / MANIFEST, manifest)
    return FacesReport(out / MANIFEST, counts)
