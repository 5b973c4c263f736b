"""The configuration's documentation, derived from the declarations in
:mod:`pipeline.config`: the values ``configs/default.toml`` holds and the README's table
of every option (``python -m pipeline.config_docs`` prints it). A test fails when either
disagrees with the declarations.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from pipeline.config import SECTIONS


def default_toml_values() -> dict[str, dict[str, Any]]:
    """The defaults as nested dicts, as ``configs/default.toml`` should hold them."""
    out = {}
    for name, cls in SECTIONS.items():
        out[name] = {f.name: (f.metadata["show"] or (lambda v: v))(f.default)
                     for f in fields(cls)}
    return out


_AFFECTS_WORDS = {"plan": "plan", "paint": "paint", "plan+paint": "plan, paint",
                  "index": "index", "output": "output", "run": "-"}


def options_table() -> str:
    """The README's configuration table (Markdown): every option with its default, its
    range or choices, what it affects and its description."""
    rows = ["| option | default | range | affects | what it does |",
            "|---|---|---|---|---|"]
    defaults = default_toml_values()
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            meta = f.metadata
            rows.append(f"| `{section}.{f.name}` | `{_toml(defaults[section][f.name])}` | "
                        f"{_range(meta)} | {_AFFECTS_WORDS[meta['affects']]} | "
                        f"{meta['doc']} |")
    return "\n".join(rows) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("|", "\\|") + '"'
    return repr(value)


def _range(meta: dict) -> str:
    if meta["choices"]:
        return ", ".join(meta["choices"])
    low, high = meta["low"], meta["high"]
    if low is None:
        return "-"
    return f"{_num(low)}..{_num(high)}" if high is not None else f">= {_num(low)}"


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


if __name__ == "__main__":
    print(options_table(), end="")
