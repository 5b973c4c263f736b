"""``mosaic live`` is safe by default: only its own paths, loopback unless ``--host``,
slow clients never slow the engine, Ctrl-C leaves a playable record (or none) and no
ffmpeg, and a source that dies or stalls ends the run with one line and exit code 1.

Each test starts ``mosaic live`` as a user does (a process in a session of its own,
signals sent to its process group as a terminal sends them), on generated clips.
"""

from __future__ import annotations

import http.client
import http.server
import signal
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest
from helpers import make_clip
from livekit import LiveProcess, ffmpeg_processes

from pipeline.video import FrameReader, probe


@pytest.fixture(scope="module")
def clip30(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of 320x240 testsrc2 at 30 fps with a tone."""
    return make_clip(tmp_path_factory.mktemp("live") / "c30.mp4", "320x240", "30", 4.0)


def raw_get(port: int, path: str, host: str = "127.0.0.1", headers: dict | None = None,
            method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    """A request with ``path`` sent exactly as written (no client-side normalising)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest(method, path, skip_host=bool(headers and "Host" in headers))
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    data = r.read() if path != "/stream.mjpg" else r.read(200)
    conn.close()
    return r.status, data


def test_only_its_page_stream_stats_snapshot_and_controls(tile_index: Path, clip30: Path
                                                          ) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_bytes()[:40]
    with LiveProcess(clip30, "--index", tile_index, "--loop") as live:
        live.wait_for(lambda s: s["frames"] > 0, what="a frame")
        port = live.port
        for path in ("/../README.md", "/etc/passwd", "//etc/passwd", "/%2e%2e/README.md",
                     "/..%2fREADME.md", "/README.md", "/live/page.html",
                     "/pipeline/live/page.html", "/stats/../../README.md", "/../../etc/passwd",
                     "/snapshot.jpg/../../README.md", "/static/", "/.git/config"):
            status, body = raw_get(port, path)
            assert status == 404, (path, status)
            assert readme not in body and b"root:" not in body
        assert raw_get(port, "/")[0] == 200
        assert raw_get(port, "/stats")[0] == 200
        status, body = raw_get(port, "/snapshot.jpg")
        assert status == 200 and body[:3] == b"\xff\xd8\xff"
        status, body = raw_get(port, "/stream.mjpg")
        assert status == 200 and body.startswith(b"--mosaicframe")
        # another site's page can neither read it (DNS rebinding) nor drive it (CSRF)
        assert raw_get(port, "/stats", headers={"Host": "evil.example"})[0] == 403
        post = {"Content-Type": "application/json", "Origin": "http://evil.example"}
        assert raw_get(port, "/control", method="POST", headers=post,
                       body=b'{"alpha": 1}')[0] == 403
        plain = {"Content-Type": "text/plain"}
        assert raw_get(port, "/control", method="POST", headers=plain,
                       body=b'{"alpha": 1}')[0] == 415
        assert live.control(alpha=5)[0] == 400
        assert live.stats()["look"]["alpha"] == 0.2  # nothing above changed it


def _other_address() -> str | None:
    """A non-loopback address of this machine, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only a route is chosen
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def test_loopback_only_unless_host(tile_index: Path, clip30: Path) -> None:
    other = _other_address()
    if other is None:
        pytest.skip("this machine has no non-loopback address to try")
    with LiveProcess(clip30, "--index", tile_index, "--loop") as live:
        assert live.url.startswith("http://127.0.0.1:")
        with pytest.raises(OSError):
            raw_get(live.port, "/stats", host=other)
    with LiveProcess(clip30, "--index", tile_index, "--loop", "--host", "0.0.0.0") as live:
        assert raw_get(live.port, "/stats", host=other)[0] == 200
        _, _, err = live.stop()
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0] and "anyone" in warnings[0]


def _slow_client(port: int, stop: threading.Event) -> None:
    """A viewer on a bad line: a tiny receive buffer, a few bytes now and then."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        while not stop.wait(0.5):
            s.recv(256)


def test_slow_clients_do_not_slow_the_engine(tile_index: Path, clip30: Path) -> None:
    stop = threading.Event()
    with LiveProcess(clip30, "--index", tile_index, "--loop", "--fps", "30",
                     "--cells", "20") as live:
        live.wait_for(lambda s: s["fps"] >= 20, what="20 frames a second")
        threads = [threading.Thread(target=_slow_client, args=(live.port, stop), daemon=True)
                   for _ in range(10)]
        for t in threads:
            t.start()
        try:
            live.wait_for(lambda s: s["clients"] == 10, what="10 slow clients")
            assert raw_get(live.port, "/stream.mjpg")[0] == 503  # the cap: 10
            time.sleep(2.5)  # the fps window holds only frames made with them attached
            fps = []
            for _ in range(12):
                fps.append(live.stats()["fps"])
                time.sleep(0.5)
        finally:
            stop.set()
    print(f"engine fps with 10 slow clients: {fps}")
    assert min(fps) >= 20 and statistics.median(fps) >= 24, fps


def test_sigint_mid_record_leaves_a_playable_file_and_no_ffmpeg(tile_index: Path,
                                                                tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "av.mp4", "320x240", "25", 3.0)
    out = tmp_path / "rec" / "shown.mp4"
    out.parent.mkdir()
    live = LiveProcess(clip, "--index", tile_index, "--loop", "--record", out)
    stats = live.wait_for(lambda s: s["record"]["seconds"] >= 3.0, what="3 s recorded")
    code, _, err = live.stop(signal.SIGINT)
    assert code == 130, err
    assert "Traceback" not in err
    assert not ffmpeg_processes(str(tmp_path)), ffmpeg_processes(str(tmp_path))
    assert [p.name for p in out.parent.iterdir()] == ["shown.mp4"]  # no temporary left
    info = probe(out)
    assert info.rate == 25 and [info.width, info.height] == stats["size"]
    assert 2.5 <= info.duration <= 30 and info.audio, info
    frames = sum(1 for _ in FrameReader(info, 0, info.frames))
    assert frames == info.frames


def test_record_is_finished_or_absent(tmp_path: Path) -> None:
    """The recorder alone: no frame, no file; an abort (a failure while stopping) leaves
    nothing; a finish leaves FILE at the real rate, however few frames were made."""
    from fractions import Fraction

    import numpy as np

    from pipeline.live_record import Recorder

    none = Recorder(tmp_path / "none.mp4", Fraction(25))
    assert none.finish() is None
    aborted = Recorder(tmp_path / "aborted.mp4", Fraction(25))
    aborted.offer(np.zeros((64, 96, 3), np.uint8))
    time.sleep(0.5)
    aborted.abort()
    done = Recorder(tmp_path / "done.mkv", Fraction(25))
    for k in range(3):  # three frames made in 1.2 s: the file still plays 1.2 s
        done.offer(np.full((64, 96, 3), 80 * k, np.uint8))
        time.sleep(0.4)
    assert done.finish() == tmp_path / "done.mkv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.mkv"]
    info = probe(tmp_path / "done.mkv")
    assert info.rate == 25 and 1.0 <= info.duration <= 2.0 and not info.audio


class _Server:
    """A one-file HTTP server on loopback that sends the first ``cut`` bytes of ``data``
    and then drops the connection (or, with ``hang``, keeps it open, silent)."""

    def __init__(self, data: bytes, cut: int, hang: bool = False) -> None:
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:cut])
                self.wfile.flush()
                if hang:
                    outer.release.wait(60)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/clip.ts"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("hang", [False, True], ids=["dies", "stalls"])
def test_a_source_that_dies_ends_with_one_line(tile_index: Path, tmp_path: Path,
                                               hang: bool) -> None:
    ts = make_clip(tmp_path / "clip.ts", "320x240", "25", 8.0, audio=False)
    data = ts.read_bytes()
    stream = _Server(data, len(data) * 2 // 5, hang)
    try:
        live = LiveProcess(stream.url, "--index", tile_index, "--stall", "4")
        live.wait_for(lambda s: s["frames"] > 10, what="frames from the stream")
        if hang:  # the page says so before the run gives up
            live.wait_for(lambda s: s["status"] == "stalled", timeout=30, what="a stall")
        deadline = time.monotonic() + 60
        while live.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        code, _, err = live.stop()
    finally:
        stream.close()
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stream.url in errors[0], err
    assert ("stalled" if hang else "stopped") in errors[0]
    assert "Traceback" not in err
    assert not ffmpeg_processes(stream.url)
