"""Locks: a second run waits for the first or gives up naming the holder; shared holds
exclude only writers."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.errors import LockedError
from pipeline.locks import file_lock

_HOLDER = textwrap.dedent("""
    import sys, time
    from pipeline.locks import file_lock
    with file_lock(sys.argv[1], "job x"):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold(lock: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_refuses_or_waits_naming_the_holder(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    lock = tmp_path / "job" / ".lock"
    proc = _hold(lock, 30)
    try:
        with (pytest.raises(LockedError, match=rf"job x is in use by pid {proc.pid} on "),
              file_lock(lock, "job x", timeout=0)):
            pass
        with (pytest.raises(LockedError, match="still in use"),
              file_lock(lock, "job x", timeout=0.3)):
            pass
    finally:
        proc.kill()
        proc.wait()
    with file_lock(lock, "job x", timeout=0):  # the kernel released the killed holder's lock
        pass
    proc = _hold(lock, 0.5)
    start = time.monotonic()
    with file_lock(lock, "job x"):  # waits, saying so once
        assert time.monotonic() - start > 0.2 and proc.wait(timeout=10) == 0
    assert any("waiting for it to finish" in r.getMessage() for r in caplog.records)


def test_shared_locks_exclude_only_writers(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    with file_lock(lock, "ix", shared=True), file_lock(lock, "ix", shared=True, timeout=0):
        pass  # two readers at once
    proc = _hold(lock, 30)
    try:
        with pytest.raises(LockedError), file_lock(lock, "ix", shared=True, timeout=0):
            pass
    finally:
        proc.kill()
        proc.wait()
