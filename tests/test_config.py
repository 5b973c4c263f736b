"""Configuration: defaults file, precedence, and errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.config_docs import default_toml_values
from pipeline.errors import ConfigError
from pipeline.sizes import parse_tile_size

ROOT = Path(__file__).resolve().parents[1]


def test_default_toml_matches_code_and_every_key_is_commented() -> None:
    text = (ROOT / "configs" / "default.toml").read_text()
    assert tomllib.loads(text) == default_toml_values()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), f"no comment above {line!r}"


def test_precedence_flag_over_set_over_file_over_default(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[index]\nclusters = 100\nseed = 5\njobs = 3\n")
    assert load_config().index.clusters == 500
    c = load_config(cfg)
    assert (c.index.clusters, c.index.seed, c.index.jobs) == (100, 5, 3)
    c = load_config(cfg, ["index.clusters=200", "index.seed=6"])
    assert (c.index.clusters, c.index.seed) == (200, 6)
    c = load_config(cfg, ["index.clusters=200"], {"index.clusters": 300, "index.jobs": None})
    assert (c.index.clusters, c.index.jobs) == (300, 3)


def test_set_values_are_typed() -> None:
    c = load_config(None, ["index.prune_percentile=10", "index.tile_size=24x16"])
    assert c.index.prune_percentile == 10.0
    assert c.index.tile_hw == (16, 24)
    assert parse_tile_size(20) == (20, 20)


@pytest.mark.parametrize(("override", "message"), [
    ("index.nope=1", "unknown key index.nope"),
    ("render2.scale=4", r"unknown section \[render2\]"),
    ("index.clusters=many", "index.clusters: expected int"),
    ("index.clusters=1", "index.clusters: must be at least 2"),
    ("index.prune_percentile=101", "index.prune_percentile: must be between"),
    ("index.tile_size=2x5", "index.tile_size: each side"),
    ("index.tile_size=0x20", "index.tile_size: each side"),
    ("index.tile_size=big", "index.tile_size: expected WIDTHxHEIGHT"),
    ("index.jobs=true", "index.jobs: expected int"),
    ("clusters=3", "expected section.key=value"),
])
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[index\nclusters=")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(bad)
    bad.write_text("[index]\nclusters = 0\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: index\.clusters: must be at least 2"):
        load_config(bad)
    bad.write_text("[index]\nclusterz = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key index\.clusterz"):
        load_config(bad)


def test_cli_reports_config_error_in_one_line(run_cli, corpus: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("index", "--corpus", corpus, "--index", tmp_path / "ix",
                           "--set", "index.clusters=-4")
    assert code == 1
    assert err.strip() == "error: index.clusters: must be at least 2, got -4"
    assert not (tmp_path / "ix").exists()


def test_readme_table_is_the_declarations() -> None:
    """The README's option table is generated from the declarations in config.py: an
    option added there without its docs fails here (and the default.toml test above)."""
    from pipeline.config_docs import options_table

    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- options table")
    table = text[text.index("\n", start) + 1:text.index("<!-- end of options table -->")]
    assert table == options_table(), "run `python -m pipeline.config_docs` into the README"


def test_every_option_is_declared_with_its_range_effect_and_doc() -> None:
    import dataclasses

    from pipeline.config import AFFECTS, SECTIONS

    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            meta = f.metadata
            assert meta["affects"] in AFFECTS and meta["doc"], f"{section}.{f.name}"
            if f.type in ("int", "float") and f.name not in ("seed",):
                assert meta["low"] is not None, f"{section}.{f.name} has no range"


def test_stills_and_faces_options_are_checked_like_any_other() -> None:
    from pipeline.config import FaceOptions, PhotoOptions, check_options

    assert load_config().photo == PhotoOptions() and load_config().faces == FaceOptions()
    c = load_config(None, ["photo.radius=5", "faces.size=100x120"])
    assert c.photo.radius == 5 and c.faces.size == (100, 120)
    with pytest.raises(ConfigError, match=r"photo\.alpha: must be between 0\.0 and 1\.0"):
        check_options("photo", PhotoOptions(alpha=1.5))
    with pytest.raises(ConfigError, match=r"faces\.margin: must be between"):
        check_options("faces", FaceOptions(margin=6.0))
    with pytest.raises(ConfigError, match=r"faces\.size: must be at least 8x8"):
        load_config(None, ["faces.size=6x6"])


def test_readme_python_example_plans_frames_in_memory(tile_index: Path, capsys) -> None:
    """The README's first Python example, run as written (on the test index)."""
    import re

    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text[text.index("## Python"):], re.S).group(1)
    assert 'index_dir = ".cache/sample/index"' in code
    exec(code.replace('".cache/sample/index"', repr(str(tile_index))), {})
    expected = [line.split("# ")[1] for line in code.splitlines()
                if line.startswith("print(")]
    assert capsys.readouterr().out.splitlines() == [e.split(":")[0] for e in expected]
