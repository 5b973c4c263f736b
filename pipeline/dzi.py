"""Writing huge images with libvips (pyvips): JPEG/PNG/TIFF files and Deep Zoom pyramids.

The mosaic arrives as a raw RGB file painted strip by strip; libvips reads it
sequentially (``rawload`` maps the file) and streams it into the encoder, so no step
holds the whole picture in memory. ``dzsave`` cuts the Deep Zoom pyramid, and
:func:`write_viewer` writes one HTML page around it with OpenSeadragon (vendored, one
pinned file with its licence, in ``pipeline/viewer/``) inlined. The page passes the tile
source to OpenSeadragon as an inline object, so no ``.dzi`` request is made: it works
opened straight from the filesystem (``file://``), with no server.

Page flags, for tests and links: ``page.html?zoom=Z`` zooms to Z times the home view
once the first tile is drawn. ``window.mosaicState`` (and ``document.title``) follow the
loading: the deepest pyramid level loaded so far, the tiles loaded, whether the view
was zoomed and whether everything it shows is loaded (``home:<level>:<tiles>[:done]``
before the zoom, ``zoomed:...`` after it); ``window.mosaicViewer`` is the viewer.

What ``--dzi`` replaces must be its own: the pyramid folder carries the tool's marker,
the page a ``generator`` meta tag. :func:`check_dzi_targets` refuses, before any work, a
``NAME_files/`` folder the tool did not make (a browser's "Save page as" makes such
folders), a page or ``.dzi`` that is not one of the tool's (unless ``--force``), and an
input inside the pyramid folder. A replaced pyramid loses only the files a pyramid holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

from pipeline.cache import MARKER, atomic_output, mark_owned, owned_kind
from pipeline.errors import OutputError

log = logging.getLogger(__name__)

VIEWER_DIR = Path(__file__).parent / "viewer"
OPENSEADRAGON = VIEWER_DIR / "openseadragon.min.js"
OSD_LICENSE = VIEWER_DIR / "OPENSEADRAGON-LICENSE.txt"
DZ_TILE = 254  # Deep Zoom tile size (+1 px overlap each side: 256-px JPEGs)
DZ_OVERLAP = 1
GENERATOR = '<meta name="generator" content="videomosaic">'  # marks the tool's pages
_LEVEL, _TILE = re.compile(r"\d+"), re.compile(r"\d+_\d+\.jpe?g")
_PYRAMID_FILES = frozenset({MARKER, "vips-properties.xml"})


def _vips():
    try:
        import pyvips
    except (ImportError, OSError) as exc:  # pyvips-binary missing or libvips broken
        raise OutputError(f"cannot load libvips through pyvips ({exc}); reinstall with "
                          "`pip install pyvips pyvips-binary`") from None
    return pyvips


def load_raw(raw: Path, width: int, height: int):
    """A libvips image over a raw RGB uint8 file (row-major), read lazily."""
    return _vips().Image.rawload(str(raw), width, height, 3)


def save_image(image, out: Path, fmt: str, quality: int = 90) -> None:
    """Save a libvips image as ``fmt`` (jpeg, png, tiff) atomically at ``out``."""
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".tmp{out.suffix}",
                                dir=out.absolute().parent)
    os.close(fd)
    tmp = Path(name)
    try:
        if fmt == "jpeg":
            # no optimize_coding: libjpeg would then hold every coefficient of the picture
            image.jpegsave(str(tmp), Q=quality)
        elif fmt == "png":
            image.pngsave(str(tmp), compression=6)
        else:
            big = image.width * image.height * 3 > (1 << 32) - (1 << 26)
            image.tiffsave(str(tmp), compression="deflate", tile=True, pyramid=False,
                           bigtiff=big)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OutputError) or not isinstance(exc, Exception):
            raise
        raise OutputError(f"{out}: libvips could not write it: "
                          f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}"
                          ) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _is_pyramid(folder: Path) -> bool:
    """Whether ``folder`` holds only what ``dzsave`` writes (a pyramid made before the
    marker existed): level folders of tiles, and libvips' properties."""
    for entry in folder.iterdir():
        if entry.is_dir() and _LEVEL.fullmatch(entry.name):
            if any(not _TILE.fullmatch(t.name) for t in entry.iterdir()):
                return False
        elif entry.name not in _PYRAMID_FILES:
            return False
    return True


def check_dzi_targets(base: Path, reads: list[Path], force: bool = False) -> None:
    """Refuse, before any work, what ``--dzi`` at ``base`` must not replace: an existing
    ``base_files/`` the tool did not make (never, even with ``force``), a ``base.html``
    or ``base.dzi`` that is not the tool's (unless ``force``), one of them being an input
    or an input inside ``base_files/``."""
    dzi, files, html = dzi_paths(base)
    for path in (dzi, html):
        if any(_same(path, r) for r in reads):
            raise OutputError(f"{path}: --dzi would overwrite this input; choose another "
                              "--out")
    real = Path(os.path.realpath(files))
    for r in reads:
        if real in Path(os.path.realpath(r)).parents:
            raise OutputError(f"{r}: is inside {files}, which --dzi replaces; move it or "
                              "choose another --out")
    if files.exists() and not (files.is_dir() and (
            owned_kind(files) == "dzi" or _is_pyramid(files))):
        raise OutputError(f"{files}: exists and was not made by this tool (a browser's "
                          "\"Save page as\" folder?); --dzi would replace it; move it away "
                          "or choose another --out")
    for path, mine, what in ((html, _is_our_page, "zoom page"),
                             (dzi, _is_dzi, "Deep Zoom file")):
        if path.exists() and not force and not mine(path):
            raise OutputError(f"{path}: exists and is not a {what} of this tool; move it "
                              "away, choose another --out, or add --force to replace it")


def _head(path: Path, size: int = 1 << 16) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(size).decode("utf-8", "replace")
    except OSError:
        return ""


def _is_our_page(path: Path) -> bool:
    head = _head(path)
    return GENERATOR in head or ("window.mosaicViewer" in _head(path, 1 << 24))


def _is_dzi(path: Path) -> bool:
    return "schemas.microsoft.com/deepzoom" in _head(path, 4096)


def _remove_pyramid(folder: Path) -> None:
    """Remove a replaced pyramid: only its level folders' tiles and its own files; a
    folder left holding anything else stays (renamed aside), with one line."""
    for entry in list(folder.iterdir()):
        if entry.is_dir() and _LEVEL.fullmatch(entry.name):
            for tile in entry.iterdir():
                if _TILE.fullmatch(tile.name):
                    tile.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                entry.rmdir()
        elif entry.name in _PYRAMID_FILES:
            entry.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        log.info("kept %s: it held files this tool did not write", folder)


def dzi_paths(base: Path) -> tuple[Path, Path, Path]:
    """``(base.dzi, base_files/, base.html)`` for a pyramid named ``base`` (no suffix)."""
    return (base.with_name(base.name + ".dzi"), base.with_name(base.name + "_files"),
            base.with_name(base.name + ".html"))


def save_dzi(image, base: Path, quality: int = 85) -> dict:
    """Write the Deep Zoom pyramid ``base.dzi`` + ``base_files/`` and the page
    ``base.html``; replaces an older pyramid of that name only once the new one is done.

    Returns the tile source (what the page passes to OpenSeadragon).
    """
    dzi, files, html = dzi_paths(base)
    parent = base.absolute().parent
    work = Path(tempfile.mkdtemp(prefix=f".{base.name}.", suffix=".dz-tmp", dir=parent))
    try:
        image.dzsave(str(work / base.name), suffix=f".jpg[Q={quality}]", tile_size=DZ_TILE,
                     overlap=DZ_OVERLAP, layout="dz", container="fs")
        new_dzi, new_files = dzi_paths(work / base.name)[:2]
        mark_owned(new_files, "dzi")
        old = None
        if files.exists():  # the tool's own (checked before any work)
            old = Path(tempfile.mkdtemp(prefix=f".{files.name}.", suffix=".old", dir=parent))
            files.rename(old / files.name)
        new_files.rename(files)
        os.replace(new_dzi, dzi)
        if old is not None:
            _remove_pyramid(old / files.name)
            with contextlib.suppress(OSError):
                old.rmdir()
    except Exception as exc:
        if isinstance(exc, OSError) and not str(exc).startswith("VipsForeign"):
            raise
        raise OutputError(f"{dzi}: libvips could not write the pyramid: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    source = tile_source(base.name, image.width, image.height)
    write_viewer(html, source, base.name)
    return source


def tile_source(name: str, width: int, height: int) -> dict:
    """OpenSeadragon's inline Deep Zoom tile source for the pyramid ``name``."""
    return {"Image": {"xmlns": "http://schemas.microsoft.com/deepzoom/2008",
                      "Url": f"{quote(name)}_files/", "Format": "jpg", "Overlap": str(DZ_OVERLAP),
                      "TileSize": str(DZ_TILE),
                      "Size": {"Width": str(width), "Height": str(height)}}}


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="videomosaic">
<title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 html, body {{ margin: 0; height: 100%; background: #111; color: #ddd;
              font: 14px sans-serif; }}
 #viewer {{ position: absolute; inset: 0; }}
 #help {{ position: absolute; left: 8px; bottom: 8px; opacity: .7; z-index: 2; }}
</style>
</head>
<body>
<div id="viewer"></div>
<div id="help">{title}: scroll or pinch to zoom, drag to pan, double-click to zoom in</div>
<script>
/* OpenSeadragon {version}, vendored unchanged from the npm package, under its licence:
{license}
*/
{osd}
</script>
<script>
(function () {{
  var source = {source};
  var viewer = OpenSeadragon({{
    id: "viewer", tileSources: source, showNavigationControl: false,
    showNavigator: false, maxZoomPixelRatio: 2, visibilityRatio: 0.5,
    imageLoaderLimit: 8, timeout: 60000
  }});
  var params = new URLSearchParams(window.location.search);
  var zoom = parseFloat(params.get("zoom") || "0");
  var state = {{deepest: -1, loaded: 0, zoomed: false, fullyLoaded: false, failed: null}};
  window.mosaicViewer = viewer;
  window.mosaicState = state;
  function show() {{
    document.title = (state.zoomed ? "zoomed:" : "home:") + state.deepest + ":" +
      state.loaded + (state.fullyLoaded ? ":done" : "");
  }}
  viewer.addHandler("tile-loaded", function (e) {{
    state.loaded += 1;
    state.deepest = Math.max(state.deepest, e.tile.level);
    show();
  }});
  viewer.addHandler("tile-load-failed", function (e) {{
    state.failed = "level " + e.tile.level + ": " + e.message;
    document.title = "tile-load-failed:" + state.failed;
  }});
  viewer.addHandler("open-failed", function (e) {{
    state.failed = e.message;
    document.title = "open-failed:" + e.message;
  }});
  viewer.addHandler("open", function () {{
    viewer.world.getItemAt(0).addHandler("fully-loaded-change", function (e) {{
      state.fullyLoaded = e.fullyLoaded && (state.zoomed || !(zoom > 0));
      show();
    }});
  }});
  viewer.addOnceHandler("tile-loaded", function () {{
    if (zoom > 0) {{
      viewer.viewport.zoomTo(viewer.viewport.getHomeZoom() * zoom, null, true);
      viewer.viewport.applyConstraints(true);
      state.zoomed = true;
      state.fullyLoaded = false;
      show();
    }}
  }});
}})();
</script>
</body>
</html>
"""


def write_viewer(html: Path, source: dict, title: str) -> Path:
    """Write the zoom page ``html`` for the inline tile ``source`` (atomically)."""
    osd = OPENSEADRAGON.read_text(encoding="utf-8").replace("</script", "<\\/script")
    version = osd.split("\n", 1)[0].removeprefix("//! openseadragon ").strip()
    page = _PAGE.format(title=_escape(title), version=version,
                        license=OSD_LICENSE.read_text(encoding="utf-8").replace("*/", "* /"),
                        osd=osd, source=json.dumps(source).replace("</", "<\\/"))
    with atomic_output(html, "w") as f:
        f.write(page)
    return html


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))
