"""Identity check: digests of what the pipeline makes from fixed inputs, to compare code
versions (a refactor must not change a single decoded pixel or score).

It runs the real ``mosaic`` command (the one installed in this checkout's venv) on:

* the built-in sample corpus (indexed with ``configs/sample.toml``) and sample clip, and a
  real clip (60 frames of ``bikes3x-640x480.mp4``) with a real 40,000-photo index, in
  each matching mode (cluster, refined, nearest), pure (``--alpha 0``) and with the
  default blend, at ``--preset ultrafast --workers 1`` and one x264 thread (x264 is then
  deterministic); the sample clip in segments of 24 frames, so that segments carry
  state over; one nearest render with contrast matching (``render.tone``);
* stills (``mosaic photo``): a sample image with the sample index, a frame of the real
  clip with the real index (contrast matching and a blend);
* a faces run (``mosaic faces``) on generated photos (scikit-image's astronaut, a mirror,
  a re-encode, a cat);
* zooms (``mosaic zoom``) on a sample image with the sample index, in and out (the latter
  with contrast matching), encoded losslessly (``--crf 0``) so that the decoded frames do
  not depend on x264's threads.

and writes one JSON of digests: per render the framemd5 of the decoded output (the
frame lines of ``ffmpeg -f framemd5``), its ``scores.json`` scores, the plan key and a
digest of every array in the plan's chunks; per still the file's digest and the decoded
pixels'; for faces each crop's digest and the manifest; per zoom the framemd5. Work goes
into ``--work`` (the same folder before and after: the index digest covers the corpus's
absolute path, so the plan keys are comparable only from the same place).

    python scripts/identity_check.py --work /tmp/idc --out before.json
    (change the code)
    python scripts/identity_check.py --work /tmp/idc --out after.json --compare before.json

``--reuse-plans CACHE``: instead, render every video again with the plans a previous run
left in CACHE (a copy is used; its painted segments are dropped), check that no render
makes a plan of its own (each reuses the old one), and compare the frames and scores
with ``--compare``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MOSAIC = str(Path(sys.executable).parent / "mosaic")
MEDIA = Path(os.environ.get("MOSAIC_MEDIA", "/work/main/.cache/media"))
REAL_CLIP = MEDIA / "bikes3x-640x480.mp4"
REAL_INDEX = MEDIA / "photo-index-40k"
FAST = ["--preset", "ultrafast", "--workers", "1", "--set", "render.encoder_threads=1", "-q"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ffmpeg() -> str:
    from pipeline.video import ffmpeg_exe

    return ffmpeg_exe()


def run(*args: str, cache: Path) -> str:
    """Run ``mosaic ARGS`` with ``MOSAIC_CACHE=cache``; its stderr (raises on failure)."""
    env = {**os.environ, "MOSAIC_CACHE": str(cache)}
    proc = subprocess.run([MOSAIC, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"mosaic {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stderr


def framemd5(path: Path) -> str:
    """Digest of the frame lines of ``ffmpeg -i path -f framemd5 -`` (the decoded frames)."""
    proc = subprocess.run([ffmpeg(), "-v", "error", "-i", str(path), "-map", "0:v:0",
                           "-f", "framemd5", "-"], capture_output=True, text=True, check=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln and not ln.startswith("#")]
    return sha("\n".join(lines).encode()) + f" ({len(lines)} frames)"


def plan_digest(plan_dir: Path) -> str:
    """Digest of every array of every chunk of a plan (zip timestamps left out)."""
    h = hashlib.sha256()
    for chunk in sorted(plan_dir.glob("chunk-*.npz")):
        with np.load(chunk, allow_pickle=False) as z:
            for name in sorted(z.files):
                a = z[name]
                h.update(f"{chunk.name}/{name}/{a.dtype}/{a.shape}".encode())
                h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def prepare(work: Path) -> dict[str, Path]:
    """The inputs: sample corpus, sample index and clip, a frame of the real clip, and a
    folder of face photos (made afresh each run, at the same paths). The sample clip is
    made once and kept in ``work/inputs/``: its encoding is not deterministic (x264's
    threads; measured: 1 run in 6 gave other bytes), and it is an input, not an output
    of the code checked."""
    for name in ("sample", "faces-src", "faces-out", "out", "cache"):
        shutil.rmtree(work / name, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    sample = work / "sample"
    run("sample", "--out", str(sample / "corpus"), "-q", cache=cache)
    run("index", "--corpus", str(sample / "corpus"), "--index", str(sample / "index"),
        "--config", str(ROOT / "configs" / "sample.toml"), "--jobs", "1", "-q", cache=cache)
    kept = work / "inputs" / "clip.mp4"
    if not kept.is_file():
        run("sample-clip", "--out", str(kept), "-q", cache=cache)
    shutil.copyfile(kept, sample / "clip.mp4")
    frame = sample / "bikes-frame.png"
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-i", str(REAL_CLIP), "-vf",
                    "select=eq(n\\,30)", "-frames:v", "1", str(frame)], check=True)
    return {"cache": cache, "sample": sample, "frame": frame}


def face_photos(folder: Path) -> None:
    """Photos with faces (and one without): scikit-image's astronaut, its mirror, a
    brighter re-encode, and the cat."""
    from skimage import data

    folder.mkdir(parents=True)
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "astronaut.png"), astronaut)
    cv2.imwrite(str(folder / "mirror.jpg"), astronaut[:, ::-1])
    cv2.imwrite(str(folder / "brighter.jpg"), cv2.convertScaleAbs(astronaut, beta=12))
    cv2.imwrite(str(folder / "cat.png"), cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR))


RENDERS = [  # (name, clip, index, extra args)
    *((f"sample-{mode}-a{alpha}", "sample", "sample",
       ["--frames", "60", "--set", f"render.matching={mode}", "--set",
        "render.segment_frames=24", "--alpha", alpha])
      for mode in ("cluster", "refined", "nearest") for alpha in ("0", "0.2")),
    *((f"bikes-{mode}-a{alpha}", "real", "real",
       ["--frames", "60", "--set", f"render.matching={mode}", "--alpha", alpha])
      for mode in ("cluster", "refined", "nearest") for alpha in ("0", "0.2")),
    ("bikes-nearest-tone", "real", "real",
     ["--frames", "60", "--set", "render.tone=0.5", "--alpha", "0"]),
]


def renders(inputs: dict[str, Path], work: Path, cache: Path) -> dict:
    out = {}
    clips = {"sample": inputs["sample"] / "clip.mp4", "real": REAL_CLIP}
    indexes = {"sample": inputs["sample"] / "index", "real": REAL_INDEX}
    (work / "out").mkdir(exist_ok=True)
    for name, clip, index, extra in RENDERS:
        dest = work / "out" / f"{name}.mp4"
        dest.unlink(missing_ok=True)
        run("render", str(clips[clip]), "--index", str(indexes[index]), "--out", str(dest),
            *FAST, *extra, cache=cache)
        scores = json.loads(Path(str(dest) + ".scores.json").read_text())["scores"]
        out[name] = {"framemd5": framemd5(dest), "scores": scores}
        print(f"{name}: {out[name]['framemd5'][:16]}", file=sys.stderr)
    for plan in sorted((cache / "plans").iterdir()):
        if plan.is_dir():
            out.setdefault("plans", {})[plan.name] = plan_digest(plan)
    return out


def stills(inputs: dict[str, Path], work: Path, cache: Path) -> dict:
    out = {}
    jobs = {"photo-sample": (inputs["sample"] / "corpus" / "sample_0000.png",
                             inputs["sample"] / "index", ["--cells", "48"]),
            "photo-bikes": (inputs["frame"], REAL_INDEX,
                            ["--cells", "80", "--tone", "0.5", "--alpha", "0.2"])}
    for name, (image, index, extra) in jobs.items():
        dest = work / "out" / f"{name}.png"
        run("photo", str(image), "--index", str(index), "--out", str(dest), "-q", *extra,
            cache=cache)
        pixels = cv2.imread(str(dest), cv2.IMREAD_UNCHANGED)
        out[name] = {"file": sha(dest.read_bytes()), "pixels": sha(pixels.tobytes()),
                     "shape": list(pixels.shape)}
    return out


def faces(work: Path, cache: Path) -> dict:
    src, dest = work / "faces-src", work / "faces-out"
    face_photos(src)
    run("faces", str(src), "--out", str(dest), "--jobs", "1", "-q", cache=cache)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest.pop("timings", None)
    crops = {p.name: sha(p.read_bytes()) for p in sorted(dest.glob("face-*.jpg"))}
    return {"crops": crops, "manifest": manifest}


ZOOMS = {  # name: extra args
    "zoom-in": [],
    "zoom-out": ["--reverse", "--tone", "0.5"],
}


def zooms(inputs: dict[str, Path], work: Path, cache: Path) -> dict:
    out = {}
    image = inputs["sample"] / "corpus" / "sample_0000.png"
    for name, extra in ZOOMS.items():
        dest = work / "out" / f"{name}.mp4"
        dest.unlink(missing_ok=True)
        run("zoom", str(image), "--index", str(inputs["sample"] / "index"), "--out", str(dest),
            "--size", "320x180", "--duration", "2", "--fps", "10", "--cells", "24",
            "--preset", "ultrafast", "--crf", "0", "-q", *extra, cache=cache)
        out[name] = {"framemd5": framemd5(dest)}
    return out


def versions() -> dict[str, str]:
    """PLAN_VERSION and RENDER_VERSION of the code checked."""
    try:
        from pipeline.planfile import PLAN_VERSION
    except ImportError:  # before the plan file had a module of its own
        from pipeline.plan import PLAN_VERSION
    from pipeline.stages.render import RENDER_VERSION

    return {"plan": PLAN_VERSION, "render": RENDER_VERSION}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/identity-check"))
    ap.add_argument("--out", type=Path, required=True, help="JSON of digests to write")
    ap.add_argument("--compare", type=Path, help="an earlier JSON: exit 1 when they differ")
    ap.add_argument("--reuse-plans", type=Path, metavar="CACHE",
                    help="render with the plans of CACHE (a previous run's cache)")
    args = ap.parse_args()
    work = args.work.resolve()
    if args.reuse_plans:
        inputs = {"sample": work / "sample"}
        cache = work / "reuse-cache"
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(args.reuse_plans, cache, symlinks=True)
        shutil.rmtree(cache / "render", ignore_errors=True)  # paint again, plan reused
        result = {"renders": renders(inputs, work, cache)}
        before = {p.name for p in (args.reuse_plans / "plans").iterdir() if p.is_dir()}
        after = {p.name for p in (cache / "plans").iterdir() if p.is_dir()}
        result["new_plans"] = sorted(after - before)
    else:
        inputs = prepare(work)
        cache = inputs["cache"]
        result = {"renders": renders(inputs, work, cache),
                  "stills": stills(inputs, work, cache), "faces": faces(work, cache),
                  "zooms": zooms(inputs, work, cache)}
    result["versions"] = versions()
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    if args.compare:
        return compare(json.loads(args.compare.read_text()), result)
    return 0


def _strip(result: dict) -> dict:
    """What must be equal: the digests and scores (not the bookkeeping of a run)."""
    out = json.loads(json.dumps(result))
    out.pop("new_plans", None)
    return out


def compare(before: dict, after: dict) -> int:
    a, b = _strip(before), _strip(after)
    if after.get("new_plans"):
        print(f"DIFFERENT: plans were made again: {after['new_plans']}", file=sys.stderr)
        return 1
    keys = set(b) if "stills" not in b else set(a) | set(b)
    diffs = [k for k in sorted(keys) if a.get(k) != b.get(k)]
    for k in diffs:
        for name in sorted(set(a.get(k) or {}) | set(b.get(k) or {})):
            if (a.get(k) or {}).get(name) != (b.get(k) or {}).get(name):
                print(f"DIFFERENT: {k}/{name}", file=sys.stderr)
    print("IDENTICAL" if not diffs else "DIFFERENT", file=sys.stderr)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
