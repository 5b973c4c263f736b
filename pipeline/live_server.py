"""The live mosaic's web server (aiohttp): its page, its stream, its stats, its snapshot
and its controls, and nothing else.

Routes (any other path, ``..`` and absolute file paths included, is a 404; nothing is
ever read from the filesystem by a request):

* ``GET /``: the page (``pipeline/live/page.html``, package data);
* ``GET /stream.mjpg``: the mosaic as MJPEG (``multipart/x-mixed-replace``): each
  client gets the newest frame whenever it is ready for one, so a slow client sees
  fewer frames and never slows the engine or the other clients; at most
  ``max_clients`` at once (then 503). Each part says its source frame's number
  (``X-Frame``) and when it was read (``X-Read-At``, ``time.monotonic()``);
* ``GET /stats``: the figures and the state as JSON;
* ``GET /snapshot.jpg``: the newest frame;
* ``POST /control``: JSON ``{control: value}`` (:func:`pipeline.live_look.changed_look`).

Bound to a loopback address, the server answers only requests addressed to it by a
loopback name (a web page elsewhere cannot reach it by DNS rebinding), and a control
request from a page of another origin is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from importlib import resources

from aiohttp import web

from pipeline.errors import ConfigError, MosaicError
from pipeline.live_session import LiveSession, Published

log = logging.getLogger(__name__)

BOUNDARY = "mosaicframe"
WRITE_TIMEOUT = 20.0  # seconds one frame may take to reach a client before it is dropped
GRACE = 1.5  # seconds the page has to see the final status before the server stops
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Hub:
    """The newest frame, handed from the engine thread to the stream handlers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.latest: Published | None = None
        self.clients = 0
        self.closed = False
        self._event = asyncio.Event()

    def publish_threadsafe(self, frame: Published) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens
            self.loop.call_soon_threadsafe(self._publish, frame)

    def _publish(self, frame: Published | None) -> None:
        if frame is not None:
            self.latest = frame
        event, self._event = self._event, asyncio.Event()
        event.set()

    def close(self) -> None:
        self.closed = True
        self._publish(None)

    async def next(self, after: int) -> Published | None:
        """The newest frame after sequence number ``after`` (waiting for one); None once
        the hub is closed."""
        while not self.closed:
            if self.latest is not None and self.latest.seq > after:
                return self.latest
            await self._event.wait()
        return None


def make_app(session: LiveSession, hub: Hub, max_clients: int, guard_host: bool
             ) -> web.Application:
    """The application: the five routes above, and the host and origin checks."""
    page = resources.files("pipeline").joinpath("live/page.html").read_bytes()

    async def index(_request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8",
                            headers=_NO_STORE)

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response({**session.stats(), "clients": hub.clients},
                                 headers=_NO_STORE)

    async def snapshot(_request: web.Request) -> web.Response:
        if (latest := hub.latest) is None:
            raise web.HTTPServiceUnavailable(text="no frame yet")
        name = f"mosaic-live-{latest.number:06d}.jpg"
        return web.Response(body=latest.jpeg, content_type="image/jpeg", headers={
            **_NO_STORE, "Content-Disposition": f'inline; filename="{name}"'})

    async def control(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send the controls as application/json")
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ConfigError("expected a JSON object of controls")
            look = session.control(changes)
        except (ValueError, ConfigError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"look": look.to_json()}, headers=_NO_STORE)

    async def stream(request: web.Request) -> web.StreamResponse:
        if hub.clients >= max_clients:
            raise web.HTTPServiceUnavailable(text=f"at most {max_clients} viewers at once")
        return await _stream(request, session, hub)

    app = web.Application(middlewares=[_guard(guard_host)], client_max_size=64 * 1024)
    app.router.add_get("/", index)
    app.router.add_get("/stream.mjpg", stream)
    app.router.add_get("/stats", stats)
    app.router.add_get("/snapshot.jpg", snapshot)
    app.router.add_post("/control", control)
    return app


async def _stream(request: web.Request, session: LiveSession, hub: Hub
                  ) -> web.StreamResponse:
    """One MJPEG client: the newest frame each time it has taken the previous one."""
    resp = web.StreamResponse(headers={
        **_NO_STORE, "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}"})
    hub.clients += 1
    try:
        await resp.prepare(request)
        seq = -1
        while (frame := await hub.next(seq)) is not None:
            head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(frame.jpeg)}\r\nX-Frame: {frame.number}\r\n"
                    f"X-Read-At: {frame.read_at:.6f}\r\n\r\n").encode()
            await asyncio.wait_for(resp.write(head + frame.jpeg + b"\r\n"), WRITE_TIMEOUT)
            session.pace.delivered(time.monotonic() - frame.read_at)
            seq = frame.seq
    except (ConnectionError, TimeoutError, asyncio.CancelledError):
        pass  # the client went, or was too slow, or the server is stopping
    finally:
        hub.clients -= 1
    return resp


def _guard(guard_host: bool) -> Callable:
    """Middleware: the Host check (loopback binds) and the origin check (controls)."""
    @web.middleware
    async def guard(request: web.Request, handler: Callable) -> web.StreamResponse:
        host = request.host.rsplit(":", 1)[0] if request.host else ""
        if guard_host and host not in LOOPBACK_NAMES:
            raise web.HTTPForbidden(text="this server answers only to its loopback address")
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and origin.split("://", 1)[-1] != \
                request.host:
            raise web.HTTPForbidden(text="controls only from the live page itself")
        return await handler(request)

    return guard


async def serve(session: LiveSession, host: str, port: int, max_clients: int,
                on_ready: Callable[[str], None]) -> None:
    """Serve until the session ends (then a short grace, so the page sees why) or the
    task is cancelled (Ctrl-C)."""
    loop = asyncio.get_running_loop()
    hub = Hub(loop)
    app = make_app(session, hub, max_clients, guard_host=is_loopback(host))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, shutdown_timeout=2.0)
        try:
            await site.start()
        except OSError as exc:
            raise MosaicError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") \
                from None
        bound = runner.addresses[0][1]
        name = f"[{host}]" if ":" in host else host
        session.publish = hub.publish_threadsafe
        session.start()
        on_ready(f"http://{name}:{bound}/")
        while not session.done.is_set():
            await asyncio.sleep(0.1)
        await asyncio.sleep(GRACE)
    finally:
        session.publish = lambda p: None
        hub.close()
        await runner.cleanup()
