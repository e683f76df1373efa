"""The `disamb review` web server: the page with its strict Content-Security-Policy, the
JSON API and the audio route over a review.Session, the request-size and Host guards,
and binding only to loopback unless told otherwise.

Apart from review.py because the session is plain data and logic that tests drive
directly, while everything here is about HTTP and who may reach it.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import socket
from pathlib import Path

from . import match
from .answers import ReviewError
from .audio import AudioOpenError, open_audio
from .inputs import AUDIO_TYPES, AudioPathError, UnsafePathError
from .review import RefitError, Session

MAX_BODY = 64 * 1024  # an answer is a few hundred bytes; anything larger is refused unread
PAGE_FILE = Path(__file__).with_name("review_page.html")


class UnsafeHostError(ReviewError):
    """The server would listen on a non-loopback address without being told to."""


# ---------------------------------------------------------------- host check


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse to listen beyond this machine unless the user asked for it: the page
    serves private voice notes and accepts answers from whoever reaches it."""
    if allow_remote:
        return
    if not is_loopback(host):
        raise UnsafeHostError(
            f"refusing to listen on {host}: not a loopback address (give --host explicitly to allow it)"
        )


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


# ---------------------------------------------------------------- web app


def _page() -> tuple[bytes, str]:
    """The page and a CSP that allows exactly its own inline script and style (by
    hash), so even a missed escape could not run injected script."""
    html = PAGE_FILE.read_text("utf-8")
    hashes = {"script": [], "style": []}
    for kind in hashes:
        for body in re.findall(rf"<{kind}>(.*?)</{kind}>", html, flags=re.S):
            digest = hashlib.sha256(body.encode("utf-8")).digest()
            hashes[kind].append("'sha256-" + base64.b64encode(digest).decode() + "'")
    csp = "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(hashes["script"]),
            "style-src " + " ".join(hashes["style"]),
            "media-src 'self'",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return html.encode("utf-8"), csp


class _BodyTooLarge(Exception):
    """The request body passed MAX_BODY while it was being read."""


class _Guard:
    """ASGI middleware around every route: the page's strict headers on every response
    (the CSP, nosniff, no referrer), and request bodies cut off at MAX_BODY, whether
    announced by Content-Length or sent chunked without one."""

    def __init__(self, app, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers, MutableHeaders
        from starlette.responses import JSONResponse

        async def send_guarded(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers[name] = value
            await send(message)

        too_large = JSONResponse({"error": f"request body larger than {MAX_BODY} bytes"}, status_code=413)
        length = Headers(scope=scope).get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            return await too_large(scope, receive, send_guarded)
        received = 0

        async def receive_limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, receive_limited, send_guarded)
        except _BodyTooLarge:
            await too_large(scope, receive, send_guarded)


def create_app(session: Session, allowed_hosts: list[str] | None = None):
    """The Starlette app: the page, a JSON API and the audio route."""
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    page, csp = _page()
    strict = {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    common = {"Cache-Control": "no-store"}

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=common)

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=common)

    async def crashed(request: Request, exc: Exception) -> Response:
        # sent outside the middleware, so it carries the strict headers itself
        return JSONResponse({"error": "internal error"}, status_code=500, headers=strict | common)

    async def state(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.state), headers=common)

    async def audio(request: Request) -> Response:
        note_id = request.path_params["note_id"]
        try:
            path = session.audio_path(note_id)
        except KeyError:
            return error(404, "no such note")
        except UnsafePathError:
            return error(403, "audio path leaves the recordings folder")
        except AudioPathError:
            return error(404, "audio file not found")
        try:
            f = open_audio(path)  # opened once: a file swapped after the check is refused
        except AudioOpenError:
            return error(403, "audio file changed after it was checked")
        except OSError:
            return error(404, "audio file not found")
        media = AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
        # served from the handle we checked (/dev/fd names that open file, not a path)
        return FileResponse(f"/dev/fd/{f.fileno()}", stat_result=os.fstat(f.fileno()), media_type=media,
                            background=BackgroundTask(f.close))

    async def answer(request: Request) -> Response:
        # JSON only: a cross-site form cannot send it without a CORS preflight we never grant
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error(415, "send application/json")
        try:
            body = await request.json()
        except ValueError:
            return error(400, "body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return error(400, 'body needs a string "id"')
        label_id = body.get("label_id")
        if label_id is not None and not isinstance(label_id, str):
            return error(400, '"label_id" must be a string or null')
        try:
            a = await run_in_threadpool(session.answer, body["id"], label_id)
        except KeyError:
            return error(404, "no such note")
        except ValueError as e:
            return error(400, str(e))
        except OSError as e:
            return error(500, f"could not save the answer: {e.strerror or e}")
        return JSONResponse({"saved": {"id": a.id, "label_id": a.label_id, "ts": a.ts}, "stats": session.stats()}, headers=common)

    async def refit(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error(415, "send application/json")
        try:
            return JSONResponse(await run_in_threadpool(session.refit), headers=common)
        except RefitError as e:
            return error(409, str(e))
        except match.MatcherError as e:
            return error(500, str(e))

    hosts = allowed_hosts or ["127.0.0.1", "localhost", "::1", "[::1]"]
    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/answer", answer, methods=["POST"]),
        Route("/api/refit", refit, methods=["POST"]),
        Route("/audio/{note_id:path}", audio),
    ]
    # the Host check stops DNS-rebinding pages from reading the API through a name of their own
    return Starlette(routes=routes, exception_handlers={Exception: crashed},
                     middleware=[Middleware(_Guard, headers=strict),
                                                Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])


def allowed_hosts_for(host: str) -> list[str]:
    names = ["127.0.0.1", "localhost", "::1", "[::1]"]
    if host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    if host in ("0.0.0.0", "::"):
        names = ["*"]  # the user chose every interface; any name they reach it by is theirs
    return names


def bind(host: str, port: int, allow_remote: bool = False) -> socket.socket:
    """Check the host, then bind the listening socket ourselves, so a busy port is an
    OSError here (not a log line and an exit inside uvicorn) and port 0 picks a free one."""
    check_host(host, allow_remote)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def make_server(session: Session, host: str = "127.0.0.1"):
    """A uvicorn server for the session; run it with `.run(sockets=[bind(...)])`."""
    import uvicorn

    app = create_app(session, allowed_hosts_for(host))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config)


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"
