#!/usr/bin/env python3
"""Fetch hand-labelled face photos for ``scripts/bench_faces.py --eval`` (no other network).

dlib's example faces (``examples/faces`` of dlib's source: 9 PASCAL VOC photos with
their faces boxed by hand in imglab XML, ``training.xml`` 4 photos / 18 faces and
``testing.xml`` 5 photos / 25 faces, plus three unlabelled photos) are in Debian's dlib
*source* package only, not in any binary one. This script asks apt for that source
package with a private deb-src list derived from the machine's own Debian sources (in a
temporary folder: the system's apt configuration is left alone), downloads only the
main tarball (8.6 MB; not the 200 MB models tarball) with apt's own downloader, checks
its SHA-256 against the package index, and unpacks ``examples/faces`` into
``.cache/media/faces-labelled/dlib``.

    python scripts/fetch_faces.py [--out .cache/media]

Needs apt (Debian or a derivative). Tests never use these files.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

SOURCE_PACKAGE = "dlib"
FACES_DIR = "examples/faces/"


def deb_src_stanzas(sources_dir: Path = Path("/etc/apt/sources.list.d"),
                    sources_list: Path = Path("/etc/apt/sources.list")) -> str:
    """deb822 ``deb-src`` stanzas for the machine's Debian archive entries.

    Takes every enabled ``Types: deb`` stanza of ``*.sources`` and every ``deb`` line of
    ``sources.list`` whose URI ends in ``/debian`` (the main archive, not security
    or third-party repositories) and writes the same entry as ``deb-src``.
    """
    out = []
    for path in sorted(sources_dir.glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if ("deb" not in fields.get("Types", "").split()
                    or fields.get("Enabled", "yes").lower() == "no"
                    or not any(u.rstrip("/").endswith("/debian")
                               for u in fields.get("URIs", "").split())):
                continue
            fields["Types"] = "deb-src"
            out.append("\n".join(f"{k}: {v}" for k, v in fields.items()))
    if sources_list.is_file():
        for line in sources_list.read_text().splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 4 and parts[0] == "deb" and parts[1].rstrip("/").endswith("/debian"):
                out.append(f"Types: deb-src\nURIs: {parts[1]}\nSuites: {parts[2]}\n"
                           f"Components: {' '.join(parts[3:])}")
    if not out:
        raise SystemExit("no Debian archive found in the apt sources; cannot fetch "
                         f"the {SOURCE_PACKAGE} source package")
    return "\n\n".join(out) + "\n"


def fetch_dlib_faces(out: Path) -> Path:
    """Download dlib's source tarball via apt and unpack ``examples/faces`` into
    ``out/faces-labelled/dlib``; returns that folder (kept if already there)."""
    dest = out / "faces-labelled" / "dlib"
    if (dest / "training.xml").is_file() and (dest / "testing.xml").is_file():
        return dest
    with tempfile.TemporaryDirectory(prefix="fetch-faces-") as tmp:
        t = Path(tmp)
        (t / "parts").mkdir()
        (t / "lists" / "partial").mkdir(parents=True)
        (t / "parts" / "deb-src.sources").write_text(deb_src_stanzas())
        opts = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={t}/parts",
                "-o", f"Dir::State::Lists={t}/lists", "-q"]
        subprocess.run(["apt-get", *opts, "update"], check=True, stdout=subprocess.DEVNULL)
        listing = subprocess.run(["apt-get", *opts, "source", "--print-uris", SOURCE_PACKAGE],
                                 check=True, capture_output=True, text=True, cwd=tmp).stdout
        tarballs = [m for m in re.findall(r"^'([^']+)' (\S+) (\d+) (SHA256:[0-9a-f]+)",
                                          listing, re.M)
                    if re.fullmatch(rf"{SOURCE_PACKAGE}_[^-]+\.orig\.tar\.\w+", m[1])]
        if not tarballs:
            raise SystemExit(f"apt lists no main tarball for source package {SOURCE_PACKAGE}")
        uri, name, _size, digest = tarballs[0]
        subprocess.run(["/usr/lib/apt/apt-helper", "download-file", uri, str(t / name), digest],
                       check=True, stdout=subprocess.DEVNULL)
        staging = t / "faces"
        staging.mkdir()
        with tarfile.open(t / name) as tar:
            for member in tar.getmembers():
                inner = member.name.split("/", 1)[-1]
                if member.isfile() and inner.startswith(FACES_DIR):
                    with tar.extractfile(member) as src:
                        (staging / Path(inner).name).write_bytes(src.read())
        if not (staging / "training.xml").is_file():
            raise SystemExit(f"{name} has no {FACES_DIR}training.xml")
        (staging / "SOURCE.txt").write_text(f"{name} ({digest}), {FACES_DIR}\n")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(staging, dest)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(".cache/media"))
    args = ap.parse_args()
    dest = fetch_dlib_faces(args.out)
    photos = sorted(p.name for p in dest.glob("*.jpg"))
    print(f"{len(photos)} photos and their labels in {dest}")


if __name__ == "__main__":
    main()
