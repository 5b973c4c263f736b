"""The README's picture of the live page: ``mosaic live`` on a real clip and index, the
page opened in Debian's headless Chromium (``tests/chromium.py``), a screenshot after
the mosaic has run a while, with the render command shown.

    python scripts/live_page_shot.py CLIP --index DIR [--out docs/img/live-page.png]
        [--wait 12] [--live-args "--cells 40"]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from chromium import Chromium, find_browser  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clip")
    p.add_argument("--index", required=True)
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "live-page.png"))
    p.add_argument("--wait", type=float, default=12.0)
    p.add_argument("--live-args", default="")
    args = p.parse_args()
    exe = find_browser() or sys.exit("no Chromium on PATH (apt-get install -y chromium)")
    cmd = [sys.executable, "-m", "pipeline", "live", args.clip, "--index", args.index,
           "--loop", "--port", "0", *args.live_args.split()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = proc.stdout.readline().split()[1]
        with tempfile.TemporaryDirectory() as profile, \
                Chromium(exe, Path(profile), 1280, 720) as page:
            page.open(url)
            page.wait_for("document.getElementById('view').naturalWidth > 0", timeout=60)
            time.sleep(args.wait)
            page.evaluate("document.getElementById('copy').click()")
            time.sleep(1)
            page.screenshot(Path(args.out))
        with urllib.request.urlopen(url + "stats") as r:
            stats = json.loads(r.read())
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    print(f"{args.out}: {stats['fps']} fps, latency {stats['latency_ms']}, cells "
          f"{stats['cells']['cols']}x{stats['cells']['rows']}, dropped {stats['dropped']} "
          f"of {stats['read']}")


if __name__ == "__main__":
    main()
