"""The package's layering: every module sits in a layer of the import-linter contract
(cli -> stages -> engines -> primitives), and the contracts hold (no upward import, no
import cycle, imports inside functions included). `make lint` runs them too."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_is_in_a_layer() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = set(re.split(r"\s*[:|]\s*", " : ".join(layers)))
    modules = {"pipeline." + ".".join(p.relative_to(ROOT / "pipeline").with_suffix("").parts)
               for p in (ROOT / "pipeline").rglob("*.py") if p.name != "__init__.py"}
    loose = sorted(m for m in modules
                   if not any(m == n or m.startswith(n + ".") for n in named))
    assert not loose, f"modules in no layer of pyproject.toml's contract: {loose}"


def test_import_contracts_hold() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 kept, 0 broken" in proc.stdout
