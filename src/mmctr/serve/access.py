"""Who may call what: an optional bearer token, and the interactive docs off unless asked for.

With a token (``--token-file PATH``, or the ``MMCTR_SERVE_TOKEN`` environment variable), every
route that changes the server (``/v1/items``, ``/admin/*``, and any route not listed as a read
below) needs ``Authorization: Bearer <token>``; with ``--token-all`` the read routes do too,
except the probes (``/health``, ``/healthz``, ``/ready``), which a load balancer calls without
credentials and which tell nothing but that the server is up. A request without the token, or
with another, gets 401 with ``WWW-Authenticate: Bearer`` before its body is read. The token is
compared in constant time (the SHA-256 digests of both, with ``hmac.compare_digest``, so that
neither its characters nor its length leak through timing). Without a token nothing is
required: the server then binds loopback by default.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
from pathlib import Path

from mmctr.errors import ConfigError
from mmctr.logs import logger
from mmctr.serve.metrics import ASGIApp, Receive, Scope, Send, ServeMetrics
from mmctr.serve.settings import ServeSettings

TOKEN_ENV = "MMCTR_SERVE_TOKEN"
MIN_TOKEN_CHARS = 16
PROBES = frozenset({"/health", "/healthz", "/ready"})
READS = frozenset({"/v1/score", "/v1/score/batch", "/v1/rank", "/v1/model", "/metrics"})
DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750's b64token
_log = logger("serve")


def read_token(settings: ServeSettings) -> str | None:
    """The bearer token the server requires: ``--token-file``'s, else the environment's, else
    None. ConfigError for an unreadable or unusable token, or ``--token-all`` without one."""
    if settings.token_file is not None:
        path = Path(settings.token_file)
        try:
            token = path.read_text().strip()
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"serve: --token-file {path}: cannot read it ({exc})") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            _log.warning(f"mmctr serve: warning: {path} is readable by others (chmod 600 it)")
        where = f"--token-file {path}"
    else:
        token, where = os.environ.get(TOKEN_ENV, "").strip(), TOKEN_ENV
    if not token and settings.token_file is not None:
        raise ConfigError(f"serve: {where}: the file holds no token")
    if not token:
        if settings.token_all:
            raise ConfigError(f"serve: --token-all needs a token: --token-file or {TOKEN_ENV}")
        return None
    if len(token) < MIN_TOKEN_CHARS or not _TOKEN_CHARS.fullmatch(token):
        raise ConfigError(
            f"serve: {where}: a token is at least {MIN_TOKEN_CHARS} characters of A-Z a-z 0-9 "
            "and ._~+/- (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def openapi_url(settings: ServeSettings) -> str | None:
    """FastAPI's ``openapi_url``: None unless ``--docs``, which turns off ``/docs`` and
    ``/redoc`` as well (they read the schema)."""
    return "/openapi.json" if settings.docs else None


def needs_token(path: str, everything: bool) -> bool:
    """Whether a request for ``path`` must carry the token (when the server has one)."""
    if path in PROBES:
        return False
    return everything or path not in READS | DOCS


def guard(app: ASGIApp, token: str | None, everything: bool, metrics: ServeMetrics) -> ASGIApp:
    """``app`` behind the token (``app`` itself when there is none); refusals are counted."""
    if token is None:
        return app
    digest = hashlib.sha256(token.encode()).digest()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_token(scope["path"], everything):
            await app(scope, receive, send)
            return
        given = _bearer(dict(scope["headers"]).get(b"authorization", b""))
        if given is not None and hmac.compare_digest(hashlib.sha256(given).digest(), digest):
            await app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in metrics.paths else "other"
        metrics.requests.labels(path, "401").inc()
        await _unauthorized(send, given is None)

    return guarded


def _bearer(header: bytes) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header; None without one."""
    scheme, _, value = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not value.strip():
        return None
    return value.strip()


async def _unauthorized(send: Send, missing: bool) -> None:
    message = "needs a bearer token" if missing else "the bearer token is not this server's"
    body = json.dumps({"detail": f"authorization: {message}", "field": "authorization"})
    challenge = b'Bearer realm="mmctr"' + (b"" if missing else b', error="invalid_token"')
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body.encode())).encode()),
        (b"www-authenticate", challenge),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})
