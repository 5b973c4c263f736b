"""Issue 16 (Reliability III): each finding reproduced as a hostile user meets it, through
the real command (``python -m pipeline``), real ffmpeg and real files. Every test builds
the user's own files in a temporary folder and checks they are byte-identical after.

These tests use the command line and the files it leaves only (no new Python names at
module level), so that the same file runs against the code before the fix; see the
report of the issue for which of them failed there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import FAST, make_clip, snapshot, workers
from helpers import alive as _alive
from helpers import descendants as _descendants
from helpers import framemd5 as _framemd5


def mosaic(*args: object, check_one_line: bool = True, timeout: float = 300,
           **popen) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline ARGS`` as a user would; never a traceback, and a failure
    is exactly one ``error:`` line (the last on stderr)."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, **popen)
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode != 0 and check_one_line:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    return proc


def user_folder(root: Path, files: dict[str, bytes], age_days: float = 0) -> dict[str, bytes]:
    """Make the user's files under ``root`` (optionally aged); their snapshot."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if age_days:
        then = time.time() - age_days * 86400
        for path in root.rglob("*"):
            os.utime(path, (then, then), follow_symlinks=False)
    return snapshot(root)


def env_with(**values: str) -> dict[str, str]:
    return {**os.environ, **values}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.2 s, 160x128 at 25 fps with a tone: 30 frames, 3 segments of 10."""
    return make_clip(tmp_path_factory.mktemp("rel3") / "src.mp4", size="160x128", seconds=1.2)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    img = cv2.resize(rng.integers(0, 256, (12, 16, 3), np.uint8), (320, 240),
                     interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "user" / "src.png"
    path.parent.mkdir()
    cv2.imwrite(str(path), img)
    return path


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit greyscale PNG of ``width`` x ``height`` pixels, all black: a few hundred
    kilobytes on disk, gigabytes once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


# -- 1 -----------------------------------------------------------------------------------

def test_finding_1_clean_refuses_folders_that_are_not_a_cache(tmp_path: Path) -> None:
    """Finding 1: `mosaic clean` deleted a user's files: `render/` and `plans/` folders
    untouched for 7 days and hidden `.*.tmp` files of any folder it was pointed at (HOME,
    through a symlink, or the current folder with MOSAIC_CACHE empty), with nothing
    checking that the folder is a mosaic cache. Now it refuses, in one line, a folder
    without the tool's marker, an empty path and HOME, and removes nothing."""
    home = tmp_path / "home"
    before = user_folder(home, {
        "render/blender/frame-0001.png": b"a Blender frame",
        "render/blender/scene.blend": b"a Blender project",
        "plans/house-renovation/kitchen.pdf": b"%PDF plans",
        "plans/house-renovation/manifest.json": b'{"rooms": 4}',
        "notes/.draft.md.tmp": b"an editor's unsaved draft",
        ".session.abcdefgh.tmp": b"another program's temporary file",
        "Documents/letter.txt": b"dear ...",
    }, age_days=30)
    (tmp_path / "link").symlink_to(home)
    cases = [
        (("clean", "--cache", home, "--older-than", "0"), {}, None, "not a mosaic cache"),
        (("clean", "--cache", tmp_path / "link", "--older-than", "0"), {}, None,
         "not a mosaic cache"),
        (("clean", "--older-than", "0"), {"MOSAIC_CACHE": ""}, home, "MOSAIC_CACHE is set"),
        (("clean", "--cache", "", "--older-than", "0"), {}, home, "empty path"),
        (("clean", "--cache", home, "--older-than", "0"), {"HOME": str(home)}, None,
         "home folder"),
        (("clean", "--older-than", "0"), {"MOSAIC_CACHE": str(home), "HOME": str(home)},
         None, "home folder"),
    ]
    for args, env, cwd, message in cases:
        run = mosaic(*args, env=env_with(**env), cwd=cwd)
        assert run.returncode == 1, (args, env, run.stdout, run.stderr)
        assert message in run.stderr, (args, env, run.stderr)
        assert snapshot(home) == before, (args, env)


def test_finding_1_clean_of_a_real_cache_keeps_what_is_not_its_own(
        tmp_path: Path, clip: Path, tile_index: Path) -> None:
    """Finding 1 (in a real cache, made before markers existed): the cache and its job
    and plan are adopted (their records name their keys), and only the files the tool
    writes are removed; a user's file put into a render job's folder, and a folder of
    the user's inside the cache's `render/`, stay byte-identical."""
    cache = tmp_path / "cache"
    run = mosaic("render", clip, "--index", tile_index, "--out", tmp_path / "o.mp4", *FAST,
                 "-q", env=env_with(MOSAIC_CACHE=str(cache)))
    assert run.returncode == 0, run.stderr
    job = next(p for p in (cache / "render").iterdir())
    for marker in cache.rglob(".mosaic-owned"):  # as a cache made before markers existed
        marker.unlink()
    before = user_folder(tmp_path / "mine", {"notes.txt": b"my notes on this render"})
    shutil.copy(tmp_path / "mine" / "notes.txt", job / "notes.txt")
    user_folder(cache / "render" / "my-project", {"scene.blend": b"not the tool's"},
                age_days=30)
    theirs = snapshot(cache / "render" / "my-project")
    run = mosaic("clean", "--cache", cache, "--older-than", "0")
    assert run.returncode == 0, run.stderr
    assert "1 old render job(s), 1 old plan(s)" in run.stdout, run.stdout
    assert not list(job.glob("seg-*")) and not list((cache / "plans").iterdir())
    assert not (job / "tasks.jsonl").exists()  # the task records are the tool's too
    assert (job / "notes.txt").read_bytes() == before["notes.txt"]
    assert snapshot(cache / "render" / "my-project") == theirs
    assert f"kept {job}" in run.stderr and "left " in run.stderr
    assert f"adopting {cache} (a cache made before markers existed)" in run.stderr


# -- 2 -----------------------------------------------------------------------------------

def test_finding_2_dzi_never_replaces_what_is_not_its_own(tmp_path: Path, photo: Path,
                                                          tile_index: Path) -> None:
    """Finding 2: `mosaic photo --dzi` replaced an existing `NAME_files/` folder whole
    (a browser's "Save page as" makes such folders), overwrote `NAME.html` and `NAME.dzi`
    without a word, and `mosaic photo z_files/src.jpg --out z.jpg --dzi` deleted its own
    input. Now each is refused in one line before any work, and nothing changes."""
    site = tmp_path / "site"
    before = user_folder(site, {
        "poster.html": b"<html>my saved page</html>",
        "poster_files/jquery.js": b"/* the page's script */",
        "poster_files/style.css": b"body {}",
        "other.html": b"<html>another page</html>",
        "other.dzi": b"not deep zoom",
    })
    zoom = tmp_path / "zoom"
    shutil.copytree(photo.parent, zoom / "z_files")
    mine = snapshot(zoom)
    common = ("--index", tile_index, "--cells", "12", "--radius", "1", "--dzi", "-q")
    cases = [((photo, "--out", site / "poster.jpg"), "was not made by this tool"),
             ((photo, "--out", site / "other.jpg"), "is not a zoom page of this tool"),
             ((zoom / "z_files" / "src.png", "--out", zoom / "z.jpg"),
              "which --dzi replaces")]
    for args, message in cases:
        run = mosaic("photo", *args, *common)
        assert run.returncode == 1 and message in run.stderr, (args, run.stderr)
    assert snapshot(site) == before and snapshot(zoom) == mine
    # the tool's own pyramid is replaced on a rerun; --force takes a user's page
    (tmp_path / "own").mkdir()
    for _ in range(2):
        run = mosaic("photo", photo, "--out", tmp_path / "own" / "p.jpg", *common,
                     env=env_with(), check_one_line=True)
        assert run.returncode == 0, run.stderr
    run = mosaic("photo", photo, "--out", site / "other.jpg", *common, "--force")
    assert run.returncode == 0, run.stderr
    assert b"videomosaic" in (site / "other.html").read_bytes()
    assert {k: v for k, v in snapshot(site).items() if k.startswith("poster")} == {
        k: v for k, v in before.items() if k.startswith("poster")}


# -- 3 -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def face_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the photographs")
    src = tmp_path_factory.mktemp("faces3") / "photos"
    src.mkdir()
    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])
    cv2.imwrite(str(src / "astronaut.png"), astronaut)
    cv2.imwrite(str(src / "mirror.jpg"), astronaut[:, ::-1])
    return src


def test_finding_3_faces_never_deletes_the_users_face_files(tmp_path: Path,
                                                            face_photos: Path) -> None:
    """Finding 3: `mosaic faces --out DIR` deleted every `face-*.jpg` in DIR that this
    run did not write, the user's own included. Now a folder of other files is refused
    (unless --force), and with --force, and over reruns with other options, only the
    crops this command wrote are ever removed."""
    out = tmp_path / "party"
    before = user_folder(out, {"face-uncle-bob.jpg": b"\xff\xd8 a face",
                               "face-0123456789abcdef-0.jpg": b"\xff\xd8 looks like a crop",
                               "notes.txt": b"who is who"})
    run = mosaic("faces", face_photos, "--out", out, "-q")
    assert run.returncode == 1 and "holds files this command did not write" in run.stderr
    assert snapshot(out) == before
    for args in (("--force",), ("--force", "--margin", "0.2"), ("--force", "--min-size",
                                                                 "300")):
        run = mosaic("faces", face_photos, "--out", out, *args, "-q")
        assert run.returncode == 0, run.stderr
        mine = {k: v for k, v in snapshot(out).items() if k in before}
        assert mine == before, args
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["faces"] == []  # none that large: every crop of the earlier runs went
    ours = {p.name for p in out.glob("face-*.jpg")} - set(before)
    assert ours == set(), ours


# -- 4 -----------------------------------------------------------------------------------

def test_finding_4_score_never_writes_over_an_input(tmp_path: Path) -> None:
    """Finding 4: `mosaic score --out` equal to an input overwrote that video with JSON
    and exited 0. Now an --out that is an input, not a .json name, or an existing file
    that is not a scores file of this tool is refused, and the inputs stay identical."""
    user = tmp_path / "user"
    user.mkdir()
    src = make_clip(user / "src.mp4", size="160x128", seconds=0.4, audio=False)
    shutil.copy(src, user / "mosaic.mp4")
    (user / "results.json").write_text('{"my": "results"}')
    (user / "link.json").symlink_to(user / "src.mp4")
    before = snapshot(user)
    for out, message in ((user / "src.mp4", "would overwrite"),
                         (user / "mosaic.mp4", "would overwrite"),
                         (user / "link.json", "would overwrite"),
                         (user / "scores.txt", "give a .json name"),
                         (user / "results.json", "not a scores file")):
        run = mosaic("score", user / "src.mp4", user / "mosaic.mp4", "--scale", "1",
                     "--tile", "32x32", "--out", out, "-q")
        assert run.returncode == 1 and message in run.stderr, (out, run.stderr)
        assert snapshot(user) == before, out
    good = tmp_path / "scores.json"
    run = mosaic("score", user / "src.mp4", user / "mosaic.mp4", "--scale", "1", "--tile",
                 "32x32", "--out", good, "-q")
    assert run.returncode == 0, run.stderr
    assert "scores" in json.loads(good.read_text()) and snapshot(user) == before


# -- 5 -----------------------------------------------------------------------------------

def _start(args: list, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from pipeline.sample import make_sample_corpus

    root = tmp_path_factory.mktemp("corpora")
    make_sample_corpus(root / "a", count=48, seed=11)
    make_sample_corpus(root / "b", count=48, seed=12)
    return root / "a", root / "b"


def _index(corpus: Path, ix: Path) -> None:
    """Build a small index in-process (the setup of a test, not what it tests)."""
    from pipeline.config import IndexConfig
    from pipeline.stages.index import run_index

    run_index(corpus, ix, IndexConfig(clusters=4, jobs=1), progress=False)


def test_finding_5_reindex_mid_render_stops_it_and_keeps_nothing_mixed(
        tmp_path: Path, two_corpora: tuple[Path, Path]) -> None:
    """Finding 5: re-indexing while a render ran made the frames painted afterwards come
    from the new tile bank; the run exited 0 and the bad segments stayed cached under the
    old job key. Now the render stops with one line naming the index, and once the old
    index is back, a rerun gives exactly the frames of an uninterrupted render."""
    corpus_a, corpus_b = two_corpora
    clip = make_clip(tmp_path / "clip.mp4", size="160x128", seconds=2.4, audio=False)
    before = [snapshot(corpus_a), snapshot(corpus_b), clip.read_bytes()]
    ix, cache, out = tmp_path / "ix", tmp_path / "cache", tmp_path / "out.mp4"
    _index(corpus_a, ix)
    shutil.copytree(ix, tmp_path / "ref-ix")
    env = env_with(MOSAIC_CACHE=str(cache))
    render = ["render", clip, "--index", ix, "--out", out, *FAST, "--workers", "1", "-q"]
    proc = _start(render, env)
    _wait_for(lambda: len(list(cache.glob("render/*/seg-*.json"))) >= 1 or
              proc.poll() is not None, "the first painted segment")
    os.killpg(proc.pid, signal.SIGSTOP)  # the render is mid-job: rebuild its index
    try:
        _index(corpus_b, ix)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "the tile index changed while this render ran" in err and str(ix) in err, err
    assert not out.exists()
    # the old index back (the same files, the same digest): the rerun reuses what was kept
    shutil.rmtree(ix)
    shutil.copytree(tmp_path / "ref-ix", ix)
    assert subprocess.run([sys.executable, "-m", "pipeline", *map(str, render)], env=env,
                          capture_output=True, timeout=300).returncode == 0
    ref = tmp_path / "ref.mp4"
    run = mosaic("render", clip, "--index", tmp_path / "ref-ix", "--out", ref, *FAST,
                 "--workers", "1", "-q", env=env_with(MOSAIC_CACHE=str(tmp_path / "c2")))
    assert run.returncode == 0, run.stderr
    assert _framemd5(out) == _framemd5(ref)
    assert [snapshot(corpus_a), snapshot(corpus_b), clip.read_bytes()] == before


# -- 6 -----------------------------------------------------------------------------------

def test_finding_6_clean_during_a_render_leaves_its_plan_alone(tmp_path: Path,
                                                               tile_index: Path) -> None:
    """Finding 6: `mosaic clean` during a render removed the plan the render was reading,
    and the render failed. Now the render holds its plan and job (shared locks that clean
    respects): clean leaves them alone and the render finishes."""
    clip = make_clip(tmp_path / "clip.mp4", size="160x128", seconds=2.4, audio=False)
    before = snapshot(tmp_path)
    cache, out = tmp_path / "cache", tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    env = env_with(MOSAIC_CACHE=str(cache))
    proc = _start(["render", clip, "--index", tile_index, "--out", out, *FAST, "--workers",
                   "1", "-q"], env)
    _wait_for(lambda: (list(cache.glob("plans/*/manifest.json")) and
              list(cache.glob("render/*/seg-*.json"))) or proc.poll() is not None,
              "a finished plan and a painted segment")
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        cleaned = mosaic("clean", "--cache", cache, "--older-than", "0", env=env)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert cleaned.returncode == 0, cleaned.stderr
    assert "0 old render job(s), 0 old plan(s)" in cleaned.stdout, cleaned.stdout
    assert "another run is using it" in cleaned.stderr
    assert proc.returncode == 0, err
    assert len(_framemd5(out)) == 60
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before


# -- 7 -----------------------------------------------------------------------------------

def test_finding_7_inspect_never_writes_into_the_index_or_a_wrong_format(
        tmp_path: Path, tile_index: Path) -> None:
    """Finding 7: `mosaic inspect --out INDEX/tiles.npy` overwrote the tile bank with a
    PNG, and PNG data went into `.txt` or `.jpg` names. Now an --out in the index, an
    extension of another format, or a user's file of another kind is refused; a .jpg
    name gets a JPEG."""
    ix = tmp_path / "ix"
    shutil.copytree(tile_index, ix)
    before = snapshot(ix)
    mine = user_folder(tmp_path / "mine", {"notes.png": b"not a picture at all"})
    for out, message in ((ix / "tiles.npy", "would overwrite"),
                         (ix / "sheet.png", "inside a tile index"),
                         (tmp_path / "sheet.txt", "written as .png or .jpg"),
                         (tmp_path / "mine" / "notes.png", "is not an image")):
        run = mosaic("inspect", ix, "--out", out, "-q")
        assert run.returncode == 1 and message in run.stderr, (out, run.stderr)
    assert snapshot(ix) == before and snapshot(tmp_path / "mine") == mine
    assert not (tmp_path / "sheet.txt").exists()
    run = mosaic("inspect", ix, "--out", tmp_path / "sheet.jpg", "-q")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "sheet.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


# -- 8 -----------------------------------------------------------------------------------


def gone_within(pids: set[int], seconds: float) -> bool:
    """Whether every process of ``pids`` has exited within ``seconds`` from now."""
    deadline = time.monotonic() + seconds
    while [p for p in pids if _alive(p)]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_finding_8_workers_are_capped_and_ctrl_c_stops_them(tmp_path: Path,
                                                            tile_index: Path) -> None:
    """Finding 8: `--workers 1000` on 2 cores started hundreds of processes, and after
    SIGINT hung, printed tracebacks and left orphans. Now the workers are capped by the
    cores, the memory and the segments (one info line saying so), and Ctrl-C (SIGINT to
    the whole process group, as a terminal sends it) stops every process at once."""
    clip = make_clip(tmp_path / "clip.mp4", size="160x128", seconds=0.8, audio=False)
    before = snapshot(tmp_path)
    env = env_with(MOSAIC_CACHE=str(tmp_path / "cache"))
    proc = _start(["render", clip, "--index", tile_index, "--out", tmp_path / "o.mp4",
                   *FAST, "--workers", "12"], env)
    peak = 0  # worker processes alive at once (its children: a worker's own child is a
    while proc.poll() is None:  # copy of it between its fork and its exec of ffmpeg)
        peak = max(peak, len(workers(proc.pid)))
        time.sleep(0.05)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    cap = min(os.cpu_count() or 1, 2)  # 2 segments of 10 frames
    assert f"render.workers=12 capped to {cap}" in err, err
    assert 1 <= peak <= cap, peak
    # Ctrl-C mid-paint: every process of the group gets SIGINT
    # long enough that the job is still painting when its first segment lands, however
    # fast the painters are
    long_clip = make_clip(tmp_path / "long.mp4", size="160x128", seconds=12, audio=False)
    cache = tmp_path / "cache2"
    proc = _start(["render", long_clip, "--index", tile_index, "--out", tmp_path / "l.mp4",
                   *FAST, "--workers", "12", "-q"], env_with(MOSAIC_CACHE=str(cache)))
    _wait_for(lambda: list(cache.glob("render/*/seg-*.json")) or proc.poll() is not None,
              "a painted segment")
    family = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    assert gone_within(family, 5.0)
    assert not list(cache.glob("render/*/.*.tmp"))
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before


# -- 9 -----------------------------------------------------------------------------------

def test_finding_9_no_bare_tracebacks(tmp_path: Path, tile_index: Path) -> None:
    """Finding 9: bare tracebacks for a 1x1 video (cv2.error in grid), `photo` on a
    100000x100000 PNG, `inspect --zoom 1000` (a 916 GiB allocation) and `inspect
    --samples` huge. Now each is one line naming the problem, before any allocation."""
    import imageio_ffmpeg

    user = tmp_path / "user"
    user.mkdir()
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "color=c=red:size=2x2:rate=25:duration=0.4", "-vf", "scale=1:1",
                    "-c:v", "libx264", "-pix_fmt", "yuv444p", str(user / "one.mp4")],
                   check=True)
    huge = user / "huge.png"
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
                     + struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0) + b"\0" * 64)
    before = snapshot(user)
    cases = [
        (("render", user / "one.mp4", "--index", tile_index, "--out", tmp_path / "o.mp4"),
         "too small to make a mosaic"),
        (("photo", huge, "--index", tile_index, "--out", tmp_path / "o.jpg"),
         "over the limit of 200 megapixels"),
        (("inspect", tile_index, "--out", tmp_path / "z.png", "--zoom", "1000"),
         "contact sheet of"),
        (("inspect", tile_index, "--out", tmp_path / "s.png", "--samples", "2000000"),
         "contact sheet of"),
    ]
    for args, message in cases:
        run = mosaic(*args, "-q", env=env_with(MOSAIC_CACHE=str(tmp_path / "cache")))
        assert run.returncode == 1 and message in run.stderr, (args, run.stderr)
    assert snapshot(user) == before
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".mp4", ".jpg", ".png")]


# -- 10 ----------------------------------------------------------------------------------

def _limited(gib: float):
    def limit() -> None:
        import resource

        size = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    return limit


def test_finding_10_decompression_bombs_are_never_decoded(tmp_path: Path,
                                                          tile_index: Path) -> None:
    """Finding 10: a 121 KB 1-bit PNG of 100000x10000 pixels took `index` to 4.0 GB,
    `photo` to 5.9 GB and `faces` to 14.2 GB. Now its header is read first: skipped in a
    corpus (listed with the reason), refused as an input, in a few hundred MB (each run
    here is limited to 3 GiB of address space)."""
    from pipeline.sample import make_sample_corpus

    corpus = tmp_path / "corpus"
    make_sample_corpus(corpus, count=12, seed=5)
    bomb = bomb_png(corpus / "bomb.png", 100_000, 10_000)
    assert bomb.stat().st_size < 200_000
    before = snapshot(corpus)
    limit = _limited(3)
    run = mosaic("index", "--corpus", corpus, "--index", tmp_path / "ix", "--clusters", "2",
                 "--jobs", "1", "-q", preexec_fn=limit)
    assert run.returncode == 0, run.stderr
    listed = (tmp_path / "ix" / "bad_files.tsv").read_text()
    assert f"{bomb}\t100000x10000 pixels is over the limit" in listed, listed
    run = mosaic("photo", bomb, "--index", tile_index, "--out", tmp_path / "p.jpg", "-q",
                 preexec_fn=limit, env=env_with(MOSAIC_CACHE=str(tmp_path / "cache")))
    assert run.returncode == 1 and "over the limit of 200 megapixels" in run.stderr
    run = mosaic("faces", corpus, "--out", tmp_path / "faces", "--jobs", "1", "-q",
                 preexec_fn=limit)
    assert run.returncode == 0, run.stderr
    assert "over the limit" in (tmp_path / "faces" / "bad_files.tsv").read_text()
    assert snapshot(corpus) == before


# -- 12 ----------------------------------------------------------------------------------

def _raw_files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*.raw")]


def test_finding_12_photo_leaves_no_raw_file(tmp_path: Path, photo: Path,
                                             tile_index: Path) -> None:
    """Finding 12: SIGTERM during `photo` left a hidden `.NAME.raw` of hundreds of MB
    next to the output, which neither a rerun nor `clean` removed. Now SIGTERM stops it
    like Ctrl-C (exit 143, the raw file removed), and the raw file of a run killed with
    SIGKILL is removed by the next run and by `mosaic clean`."""
    out_dir, cache = tmp_path / "posters", tmp_path / "cache"
    out_dir.mkdir()
    before = user_folder(out_dir, {"old-poster.jpg": b"\xff\xd8\xff my earlier poster"})
    env = env_with(MOSAIC_CACHE=str(cache))
    args = ["photo", photo, "--index", tile_index, "--out", out_dir / "p.jpg", "--cells",
            "160", "--tile-px", "48", "--radius", "1", "-q"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = _start(args, env)
        _wait_for(lambda p=proc: _raw_files(out_dir, cache) or p.poll() is not None,
                  "the raw canvas")
        time.sleep(0.2)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
        if sig == signal.SIGTERM:
            assert proc.returncode == 143, err
            assert "interrupted (SIGTERM)" in err and "Traceback" not in err
            assert not _raw_files(out_dir, cache)
    assert _raw_files(out_dir, cache)  # SIGKILL: nothing can clean up at once
    run = mosaic("clean", "--older-than", "7d", env=env)
    assert run.returncode == 0 and "1 photo raw file(s)" in run.stdout, run.stdout
    assert not _raw_files(out_dir, cache)
    assert {k: v for k, v in snapshot(out_dir).items() if k in before} == before


# -- 13 ----------------------------------------------------------------------------------

def test_finding_13_outputs_never_go_inside_the_cache(tmp_path: Path, clip: Path,
                                                      tile_index: Path) -> None:
    """Finding 13: an --out inside the cache (a segment file) was accepted; the next run
    repainted over it, and `verify --renders` deleted the user's scores file there. Now
    outputs inside the cache's working folders are refused, and `verify --renders` only
    touches the records it writes."""
    cache = tmp_path / "cache"
    env = env_with(MOSAIC_CACHE=str(cache))
    run = mosaic("render", clip, "--index", tile_index, "--out", tmp_path / "o.mp4", *FAST,
                 "-q", env=env)
    assert run.returncode == 0, run.stderr
    job = next((cache / "render").iterdir())
    plan = next((cache / "plans").iterdir())
    user_scores = job / "seg-00000.mp4.scores.json"
    user_scores.write_text('{"scores": {"mine": 1}}')
    before = snapshot(cache)
    cases = [("render", clip, "--index", tile_index, "--out", job / "seg-00000.mp4", *FAST),
             ("render", clip, "--index", tile_index, "--out", job / "mine.mp4", *FAST),
             ("photo", tmp_path / "o.mp4", "--index", tile_index, "--out", plan / "p.jpg"),
             ("score", clip, tmp_path / "o.mp4", "--out", job / "s.json")]
    for args in cases:
        run = mosaic(*args, "-q", env=env)
        assert run.returncode == 1 and "whose files this tool replaces" in run.stderr, (
            args, run.stderr)
    assert snapshot(cache) == before
    run = mosaic("verify", "--renders", env=env)
    assert run.returncode == 0, run.stderr
    assert snapshot(cache) == before


# -- 14 ----------------------------------------------------------------------------------

def test_finding_14_errors_name_the_real_cause(tmp_path: Path, clip: Path,
                                               tile_index: Path) -> None:
    """Finding 14: `MOSAIC_FFMPEG=/bin/false` reported a corrupt video,
    `MOSAIC_FFMPEG=/nonexistent` a bare `[Errno 2]` only after planning had started, and
    a `file:///` URL of an existing file "no such file". Now ffmpeg is checked before any
    work, and file:// URLs name local files."""
    user = tmp_path / "my videos"
    user.mkdir()
    shutil.copy(clip, user / "a clip.mp4")
    before = snapshot(user)
    cache = tmp_path / "cache"
    for exe, message in (("/bin/false", "it does not run or is not ffmpeg"),
                         ("/nonexistent", "no such program")):
        for args in (("render", user / "a clip.mp4", "--index", tile_index, "--out",
                      tmp_path / "o.mp4", *FAST), ("sample-clip", "--out", tmp_path / "c.mp4")):
            run = mosaic(*args, "-q", env=env_with(MOSAIC_FFMPEG=exe,
                                                   MOSAIC_CACHE=str(cache)))
            assert run.returncode == 1, run.stderr
            assert f"MOSAIC_FFMPEG={exe}: {message}" in run.stderr, run.stderr
        assert not (cache / "plans").exists() and not (cache / "render").exists()
    url = (user / "a clip.mp4").as_uri()
    assert url.startswith("file:///") and "%20" in url
    run = mosaic("render", url, "--index", tile_index, "--out", tmp_path / "o.mp4", *FAST,
                 "-q", env=env_with(MOSAIC_CACHE=str(cache)))
    assert run.returncode == 0, run.stderr
    assert len(_framemd5(tmp_path / "o.mp4")) == 30
    assert snapshot(user) == before


# -- 15 ----------------------------------------------------------------------------------

def _read_only(folder: Path) -> bool:
    """Make ``folder`` really read-only (a read-only bind mount when root, else the mode
    bits); False when neither is possible."""
    if os.geteuid() == 0:
        made = subprocess.run(["mount", "--bind", str(folder), str(folder)],
                              capture_output=True).returncode == 0 and subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True
        ).returncode == 0
        return made
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return True


def test_finding_15_verify_works_on_a_read_only_index(tmp_path: Path,
                                                      tile_index: Path) -> None:
    """Finding 15: `verify` on a read-only index failed on its lock, though it only
    reads. Now its shared lock is taken read-only (or skipped where no lock file can be
    made), and it checks the index."""
    ix = tmp_path / "ix"
    shutil.copytree(tile_index, ix)
    (ix / ".lock").unlink(missing_ok=True)
    before = snapshot(ix)
    if not _read_only(ix):
        pytest.skip("cannot make a read-only folder here")
    try:
        with pytest.raises(OSError):
            (ix / "probe").write_bytes(b"x")
        run = mosaic("verify", ix)
        assert run.returncode == 0, run.stderr
        assert "every artifact and checkpoint shard matches" in run.stderr
        assert snapshot(ix) == before
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ix)], check=False)
        else:
            for path in [ix, *ix.rglob("*")]:
                path.chmod(path.stat().st_mode | stat.S_IWUSR)


# -- 16 ----------------------------------------------------------------------------------

def test_finding_16_photo_radius_needs_only_the_true_bound(tmp_path: Path, photo: Path,
                                                           tile_index: Path) -> None:
    """Finding 16: the photo radius pre-check asked for (2r+1)^2 distinct tiles where
    (r+1)^2 (clipped to the grid) suffice: `--radius 10 --cells 10` was refused with
    enough tiles. Now it runs, and no tile repeats anywhere in the picture."""
    before = snapshot(photo.parent)
    out = tmp_path / "p.png"
    run = mosaic("photo", photo, "--index", tile_index, "--out", out, "--radius", "10",
                 "--cells", "10", env=env_with(MOSAIC_CACHE=str(tmp_path / "cache")))
    assert run.returncode == 0, run.stderr
    assert "mosaic of 10x8 cells, 80 distinct tiles" in run.stderr, run.stderr
    assert cv2.imread(str(out)).shape == (8 * 32, 10 * 32, 3)
    assert snapshot(photo.parent) == before


# -- 17 ----------------------------------------------------------------------------------

def test_finding_17_fifo_inputs_are_refused(tmp_path: Path, tile_index: Path) -> None:
    """Finding 17 (first part): a FIFO input with no writer blocked forever. Now a FIFO
    is refused as an input in one line (listed as a bad file in a corpus), at once."""
    from pipeline.sample import make_sample_corpus

    user = tmp_path / "user"
    make_sample_corpus(user / "corpus", count=8, seed=2)
    for name in ("pipe.mp4", "pipe.jpg", "corpus/pipe.jpg"):
        os.mkfifo(user / name)
    before = snapshot(user)
    env = env_with(MOSAIC_CACHE=str(tmp_path / "cache"))
    cases = [("render", user / "pipe.mp4", "--index", tile_index, "--out", tmp_path / "o.mp4"),
             ("photo", user / "pipe.jpg", "--index", tile_index, "--out", tmp_path / "o.jpg"),
             ("score", user / "pipe.mp4", user / "pipe.mp4")]
    for args in cases:
        run = mosaic(*args, "-q", env=env, timeout=60)
        assert run.returncode == 1, run.stderr
        assert "FIFO" in run.stderr, (args, run.stderr)
    run = mosaic("index", "--corpus", user / "corpus", "--index", tmp_path / "ix",
                 "--clusters", "2", "--jobs", "1", "-q", timeout=60)
    assert run.returncode == 0, run.stderr
    assert "pipe.jpg\tnot a regular file" in (tmp_path / "ix" / "bad_files.tsv").read_text()
    run = mosaic("faces", user / "corpus", "--out", tmp_path / "faces", "--jobs", "1", "-q",
                 timeout=60)
    assert run.returncode == 0, run.stderr
    assert snapshot(user) == before


def test_finding_17_manifest_paths_that_escape_the_corpus_fail_verify(
        tmp_path: Path, tile_index: Path) -> None:
    """Finding 17 (second part): a manifest edited to point outside the corpus
    (`../../etc/passwd`, `corpus=/etc`) passed `verify`. Now both are named as damage."""
    for edit in ("path", "corpus"):
        ix = tmp_path / edit
        shutil.copytree(tile_index, ix)
        manifest = json.loads((ix / "manifest.json").read_text())
        if edit == "path":
            manifest["sources"]["paths"][0] = "../../etc/passwd"
        else:
            manifest["corpus"] = "/etc"
        (ix / "manifest.json").write_text(json.dumps(manifest))
        before = snapshot(ix)
        run = mosaic("verify", ix, check_one_line=False)
        assert run.returncode == 1, run.stderr
        assert "manifest.json" in run.stderr, run.stderr
        expected = "leaves the corpus" if edit == "path" else "recorded digests"
        assert expected in run.stderr, run.stderr
        assert snapshot(ix) == before
