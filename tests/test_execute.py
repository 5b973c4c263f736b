"""Where tasks run: the worker choice (cores, memory, segments), the local pool with its
warm-up, and stopping a process tree."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from helpers import alive

from pipeline.execute import LocalPool, choose_workers, make_pool
from pipeline.processes import descendants, stop_trees


@pytest.mark.parametrize(("preset", "cores", "avail_gib", "expect"), [
    ("ultrafast", 2, 22, (2, 1)),  # painting dominates: a worker per core
    ("slow", 2, 22, (1, 3)),  # x264 dominates: one encoder, 1.5 threads per core
    ("slow", 16, 120, (4, 4)),
    ("ultrafast", 16, 6, (2, 8)),  # memory caps the workers; the cores go to x264 threads
])
def test_worker_choice_fits_cores_and_memory(preset: str, cores: int, avail_gib: int,
                                             expect: tuple[int, int]) -> None:
    choice = choose_workers(5120 * 2880, "libx264", preset, cores=cores,
                            available=avail_gib << 30)
    assert (choice.workers, choice.threads) == expect
    assert choice.workers * choice.bytes_per_worker <= 0.6 * (avail_gib << 30)


@pytest.mark.parametrize(("cores", "avail_gib", "expect"), [
    (2, 22, (2, 1)),  # x264 with the options for mosaic frames is light: a worker per core
    (16, 120, (16, 1)),
    (16, 22, (4, 4)),  # memory caps the workers; the cores go to x264 threads
])
def test_worker_choice_with_x264_tuned_for_mosaic_frames(cores: int, avail_gib: int,
                                                          expect: tuple[int, int]) -> None:
    choice = choose_workers(5120 * 2880, "libx264", "slow", cores=cores,
                            available=avail_gib << 30, tuned=True)
    assert (choice.workers, choice.threads) == expect
    assert choice.workers * choice.bytes_per_worker <= 0.6 * (avail_gib << 30)


def test_workers_asked_for_are_capped_by_cores_memory_and_segments() -> None:
    choice = choose_workers(1280 * 960, "libx264", "ultrafast", workers=8, cores=2,
                            available=22 << 30, segments=5)
    assert choice.workers == 2 and choice.asked == 8
    assert "capped to 2" in choice.describe_cap(5)
    choice = choose_workers(1280 * 960, "libx264", "ultrafast", workers=8, cores=16,
                            available=22 << 30, segments=3)
    assert choice.workers == 3
    choice = choose_workers(5120 * 2880, "libx264", "placebo", workers=8, cores=16,
                            available=4 << 30)
    assert choice.workers == 1  # one always runs, whatever the memory


def _pid() -> int:
    return os.getpid()


def test_local_pool_runs_tasks_in_other_processes_after_the_warm_up() -> None:
    pool = make_pool(1, None, warm_up=_pid)
    assert isinstance(pool, LocalPool)
    try:
        future = pool.submit(_pid, key="pid")
        assert future.result(timeout=120) != os.getpid()
    finally:
        pool.close()


def test_stop_trees_kills_a_process_and_what_it_started() -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', "
                               "'import time; time.sleep(60)']); time.sleep(60)"])
    deadline = time.monotonic() + 20
    while not descendants([parent.pid]) and time.monotonic() < deadline:
        time.sleep(0.05)
    children = descendants([parent.pid])
    assert children
    stop_trees([parent.pid])
    parent.wait(timeout=10)
    assert not [pid for pid in children if alive(pid)]  # gone, or a zombie awaiting init


def test_quiet_tracker_silences_only_the_trackers_warning(monkeypatch) -> None:
    """The resource tracker's warning (printed by a process of its own after a failed
    run's error line) is ignored by the processes started afterwards; others are not."""
    from pipeline.execute import quiet_tracker

    monkeypatch.setenv("PYTHONWARNINGS", "default")
    quiet_tracker()
    quiet_tracker()  # once is enough: not added twice
    assert os.environ["PYTHONWARNINGS"].count("resource_tracker") == 2
    code = ("import warnings\n"
            "warnings.warn_explicit('1 leaked semlock', UserWarning, 'resource_tracker.py',"
            " 1, module='joblib.externals.loky.backend.resource_tracker')\n"
            "warnings.warn_explicit('/mp-x: No such file', UserWarning, "
            "'resource_tracker.py', 1, module='multiprocessing.resource_tracker')\n"
            "warnings.warn_explicit('another', UserWarning, 'x.py', 1, module='x')\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    assert "another" in err and "semlock" not in err and "mp-x" not in err
    # multiprocessing's own tracker, for real: a semaphore registered and gone by exit
    code = ("from multiprocessing import resource_tracker\n"
            "import os\n"
            "resource_tracker.ensure_running()\n"
            "resource_tracker.register('/mp-gone-before-exit', 'semaphore')\n"
            "os._exit(0)\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30).stderr
    assert err == "", err


def test_local_plan_tasks_share_the_cores_among_the_workers() -> None:
    """Each local worker's plan searches on its share of the cores (two workers on two
    cores: one thread each, not two contending); a set render.plan_threads stands."""
    from pipeline.config import RenderConfig
    from pipeline.stages.planner import local_plan_config

    auto = RenderConfig()
    assert auto.plan_threads == 0
    assert local_plan_config(auto, 2, cores=2).plan_threads == 1
    assert local_plan_config(auto, 1, cores=2).plan_threads == 2
    assert local_plan_config(auto, 4, cores=16).plan_threads == 4
    assert local_plan_config(auto, 3, cores=2).plan_threads == 1
    assert local_plan_config(RenderConfig(plan_threads=3), 2, cores=2).plan_threads == 3


def test_the_workers_preload_leaves_scipy_linalg_for_later() -> None:
    """The module the workers' server imports loads the kernels without scipy.linalg
    (numba's look for BLAS), the kernels run, and scipy.linalg imports as usual after."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import pipeline.stages.worker\n"
        "assert 'scipy.linalg' not in sys.modules\n"
        "from pipeline.scan import merge_orientations\n"
        "ids = np.array([[[3, 1]], [[1, 2]]])\n"
        "dist = np.array([[[1, 2]], [[0.5, 3]]], np.float32)\n"
        "assert merge_orientations(ids, dist, 3)[0].tolist() == [[1, 3, 2]]\n"
        "import scipy.linalg\n"
        "print(scipy.linalg.det(np.eye(2)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.0"


def test_opencv_threads_set_for_the_block_and_put_back() -> None:
    """A task's OpenCV threads are its share of the cores while it runs, and what they
    were after it (also after a failure); 0 leaves them alone."""
    import cv2

    from pipeline.execute import opencv_threads

    before = cv2.getNumThreads()
    with opencv_threads(1):
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == before
    with pytest.raises(RuntimeError), opencv_threads(1):
        raise RuntimeError("a failing task")
    assert cv2.getNumThreads() == before
    with opencv_threads(0):
        assert cv2.getNumThreads() == before


def test_task_threads_hold_opencv_and_blas() -> None:
    """A painter's share of the cores holds OpenCV's threads to it and numpy's BLAS to one
    thread (its products are small: more threads only spin) for the block, then puts
    both back."""
    import cv2
    from threadpoolctl import threadpool_info

    from pipeline.execute import task_threads

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before, cv_before = blas(), cv2.getNumThreads()
    with task_threads(1):
        assert cv2.getNumThreads() == 1 and set(blas()) <= {1}
    assert blas() == before and cv2.getNumThreads() == cv_before
    with task_threads(2):
        assert cv2.getNumThreads() == 2 and set(blas()) <= {1}
    assert blas() == before and cv2.getNumThreads() == cv_before
