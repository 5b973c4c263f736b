"""Reusable reliability helpers: artifact records, free space, disk-full writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.cache import (
    artifact_problem,
    atomic_memmap,
    check_artifact,
    ensure_free,
    free_bytes,
    record_artifact,
    write_npz,
)
from pipeline.errors import DiskFullError, MosaicError


def test_record_and_check_artifact(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    data = bytearray(os.urandom(3 << 20))  # 3 MiB: the cheap check samples it
    f.write_bytes(data)
    rec = record_artifact(f)
    assert rec["size"] == len(data) and len(rec["digest"]) == len(rec["sample"]) == 32
    assert check_artifact(f, rec) and check_artifact(f, rec, full=True)
    # truncated: caught by the size
    f.write_bytes(data[:-1])
    assert artifact_problem(f, rec).startswith("size")
    # a changed sampled block (the first): caught by the cheap check
    data[0] ^= 1
    f.write_bytes(data)
    assert not check_artifact(f, rec)
    data[0] ^= 1
    # a change between sampled blocks: only the full check sees it
    data[100_000] ^= 1
    f.write_bytes(data)
    assert check_artifact(f, rec) and not check_artifact(f, rec, full=True)
    assert artifact_problem(tmp_path / "gone", rec) == "missing"
    assert "no size and digest" in artifact_problem(f, 123)


def test_ensure_free_names_the_path(tmp_path: Path) -> None:
    assert ensure_free(tmp_path, 1000, "a small write") >= 1000
    with pytest.raises(DiskFullError, match=rf"{tmp_path}.*writing the moon needs about") as e:
        ensure_free(tmp_path / "not" / "yet", free_bytes(tmp_path) * 2, "writing the moon")
    assert isinstance(e.value, MosaicError) and "\n" not in str(e.value)


def test_writes_on_a_full_disk_fail_cleanly(small_disk) -> None:
    """A real full filesystem: DiskFullError naming the file, no temporary file left, and
    the memory-mapped writer fails up front (never a SIGBUS on a page write)."""
    disk = small_disk(256 << 10)
    with pytest.raises(DiskFullError, match=r"big\.npz: cannot write: no space left"):
        write_npz(disk.path / "big.npz", a=np.zeros(1 << 20, np.uint8))
    with (pytest.raises(DiskFullError, match=r"big\.npy: cannot write"),
          atomic_memmap(disk.path / "big.npy", (1 << 20,), np.uint8) as arr):
        arr[:] = 7
    assert list(disk.path.iterdir()) == []
    disk.grow(4 << 20)
    with atomic_memmap(disk.path / "big.npy", (1 << 20,), np.uint8) as arr:
        arr[:] = 7
    assert np.load(disk.path / "big.npy").sum() == 7 << 20
