"""One small web application in three designs: where does the session live?

Where state lives:
- `memory`: the stateful backend. Sessions and carts are in a dict inside the backend process; the
  client holds only the key (cookie `sessionId`). Another process, or the same one restarted, has
  no such key: the user is logged out.
- `store`: the stateless backend. The process keeps nothing between requests; sessions (with a TTL)
  and carts are in a shared store (SQLite file, or a real Redis). Any backend can serve any request;
  wipe the store and everyone is logged out. In a Redis every key is under `protolab:`; nothing
  else in that database is read, counted or deleted.
- `jwt`: identity travels with every request as a signed token (RFC 7519, HS256, `exp`); no lookup
  is needed to know who you are. The cart still lives in the shared store. The catch: a token cannot
  be revoked before it expires unless the servers keep a deny-list, which is state again.

This module is sans-IO: `App.handle(request, now)` returns a response; the stores (a dict, SQLite,
Redis) live in `protolab.net.stores`, and sockets in
`protolab.net.backend`. Stores are plain objects with get/set/delete.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol
from urllib.parse import parse_qs

SESSION_TTL = 1800  #: seconds a session (or token) lives
COOKIE = "sessionId"
#: The lab's users and their passwords (a lab, not a secret); only salted scrypt hashes are kept.
LAB_USERS = {"alice": "wonderland", "bob": "builder", "carol": "correct horse"}


class Design(Enum):
    MEMORY = "memory"  #: sessions in the backend process's memory
    STORE = "store"  #: sessions in a shared store; the process keeps nothing
    JWT = "jwt"  #: identity in a signed token; the cart in the shared store


# -- stores ---------------------------------------------------------------------------------------


class Store(Protocol):
    def get(self, key: str, now: float) -> str | None: ...
    def set(self, key: str, value: str, ttl: float, now: float) -> None: ...
    def set_many(self, items: list[tuple[str, str]], ttl: float, now: float) -> None: ...
    def delete(self, key: str) -> None: ...
    def wipe(self) -> None: ...
    def count(self, prefix: str) -> int: ...


# -- passwords ------------------------------------------------------------------------------------


def hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2 ** 12, r=8, p=1, dklen=32)


@dataclass
class UserDb:
    """Salted scrypt hashes of the lab users, made when the process starts."""

    hashes: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)

    @classmethod
    def lab(cls) -> UserDb:
        db = cls()
        for user, password in LAB_USERS.items():
            salt = secrets.token_bytes(16)
            db.hashes[user] = (salt, hash_password(password, salt))
        return db

    def check(self, user: str, password: str) -> bool:
        salt, expected = self.hashes.get(user, (b"\0" * 16, b"\0" * 32))
        ok = hmac.compare_digest(hash_password(password, salt), expected)  # constant time
        return ok and user in self.hashes


# -- HTTP messages, as data -----------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  #: lower-case names
    body: bytes = b""

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
        return None

    def fields(self) -> dict[str, str]:
        """The body's fields: a JSON object (`application/json`) or a form
        (`application/x-www-form-urlencoded`, what `curl -d` and an HTML form send). Raises
        `BadBody` (400, 415) for anything else, with the reason."""
        if not self.body:
            return {}
        ctype = self.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype == "application/json":
            return _json_fields(self.body)
        if ctype == "application/x-www-form-urlencoded":
            if _json_object(self.body) is not None:
                raise BadBody(415, "the body is JSON but its Content-Type says a form "
                                   "(application/x-www-form-urlencoded, curl -d's default): "
                                   "add -H 'Content-Type: application/json', or post "
                                   "user=...&password=...")
            return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8", "replace"),
                                                 max_num_fields=100).items()}
        # RFC 9110 section 15.5.16: 415 for a content type this resource does not take.
        raise BadBody(415, f"Content-Type {ctype or '(none)'} is not taken here: send "
                           f"application/json or application/x-www-form-urlencoded")


class BadBody(ValueError):
    """A request body the app cannot read: answered with `status` and `reason`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _json_object(body: bytes) -> dict | None:
    """The body as a JSON object; None when it is not one (bad JSON, too deeply nested, not an
    object)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: a nesting bomb, [[[[...
        return None
    return data if isinstance(data, dict) else None


def _json_fields(body: bytes) -> dict[str, str]:
    data = _json_object(body)
    if data is None:
        raise BadBody(400, 'the body is not a JSON object (like {"user": "alice", '
                           '"password": "..."}), or is nested too deeply')
    return {str(k): _scalar(v) for k, v in data.items()}


def _scalar(value: object) -> str:
    """A field's value as text; a nested object or list is no field value (``)."""
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (int, float, bool)) or value is None else ""


@dataclass(frozen=True)
class Response:
    status: int
    body: dict
    headers: tuple[tuple[str, str], ...] = ()

    def encode_body(self) -> bytes:
        return json.dumps(self.body).encode()


def _json(status: int, **body: object) -> Response:
    return Response(status, dict(body))


# -- the application ------------------------------------------------------------------------------


class App:
    """The API of all three designs: POST /login, GET /profile, POST /cart/items, GET /cart,
    POST /logout. `backend` names the process in every answer, so a client sees who served it."""

    def __init__(self, design: Design, store: Store, backend: str, secret: bytes = b"",
                 denylist: bool = False, users: UserDb | None = None,
                 lab_endpoints: bool = False) -> None:
        if design is Design.JWT and len(secret) < 32:
            raise ValueError("the jwt design needs a secret of at least 32 bytes")
        self.design = design
        self.store = store
        self.backend = backend
        self.secret = secret
        self.denylist = denylist
        self.users = users or UserDb.lab()
        self.lab_endpoints = lab_endpoints  #: POST /lab/sessions, for memory measurements only

    def handle(self, req: Request, now: float) -> Response:
        """Answer `req` at time `now` (seconds, the caller's clock)."""
        try:
            return self._route(req, now)
        except BadBody as exc:
            return _json(exc.status, error=exc.reason)

    def _route(self, req: Request, now: float) -> Response:
        route = (req.method, req.path.split("?", 1)[0])
        if route == ("POST", "/login"):
            return self._login(req, now)
        if route == ("POST", "/lab/sessions") and self.lab_endpoints \
                and self.design is not Design.JWT:
            return self._lab_sessions(req, now)
        if route not in {("GET", "/profile"), ("POST", "/cart/items"), ("GET", "/cart"),
                         ("POST", "/logout")}:
            return _json(404, error="no such route")
        who = self._identify(req, now)
        if isinstance(who, Response):
            return who
        user, key = who
        if route == ("GET", "/profile"):
            return _json(200, user=user, backend=self.backend, state=self._where())
        if route == ("GET", "/cart"):
            return _json(200, user=user, items=self._cart(key, now), backend=self.backend)
        if route == ("POST", "/cart/items"):
            item = req.fields().get("item", "").strip()[:64]
            if not item:
                return _json(400, error="give an item")
            items = self._cart(key, now) + [item]
            self.store.set(f"cart:{key}", json.dumps(items), SESSION_TTL, now)
            return _json(200, user=user, items=items, backend=self.backend)
        return self._logout(req, key, now)

    def _where(self) -> str:
        return {Design.MEMORY: f"session in the memory of backend {self.backend}",
                Design.STORE: "session in the shared store",
                Design.JWT: "identity in the signed token; cart in the shared store"}[self.design]

    def _login(self, req: Request, now: float) -> Response:
        f = req.fields()
        user, password = f.get("user", ""), f.get("password", "")
        if not self.users.check(user, password):
            return _json(401, error="wrong user or password")
        if self.design is Design.JWT:
            import jwt

            claims = {"sub": user, "iat": int(now), "exp": int(now + SESSION_TTL),
                      "jti": secrets.token_urlsafe(12)}
            token = jwt.encode(claims, self.secret, algorithm="HS256")
            return _json(200, user=user, token=token, backend=self.backend)
        sid = secrets.token_urlsafe(32)
        self.store.set(f"session:{sid}", json.dumps({"user": user}), SESSION_TTL, now)
        cookie = f"{COOKIE}={sid}; HttpOnly; SameSite=Lax; Path=/; Max-Age={SESSION_TTL}"
        return Response(200, {"user": user, "backend": self.backend},
                        (("Set-Cookie", cookie),))

    def _identify(self, req: Request, now: float) -> tuple[str, str] | Response:
        """(user, key of the cart) or a 401."""
        if self.design is Design.JWT:
            import jwt

            auth = req.headers.get("authorization", "")
            if not auth.startswith("Bearer "):
                return _json(401, error="no bearer token")
            try:
                # Only HS256 is accepted: alg=none and any other algorithm are refused.
                claims = jwt.decode(auth[7:], self.secret, algorithms=["HS256"],
                                    options={"require": ["exp", "sub", "jti"]})
            except jwt.PyJWTError as exc:
                return _json(401, error=f"bad token: {type(exc).__name__}")
            if self.denylist and self.store.get(f"deny:{claims['jti']}", now) is not None:
                return _json(401, error="token revoked (deny-list)")
            return claims["sub"], f"user:{claims['sub']}"
        sid = req.cookie(COOKIE)
        if not sid:
            return _json(401, error="not logged in")
        raw = self.store.get(f"session:{sid}", now)
        if raw is None:
            return _json(401, error=f"unknown session ({self._where_lost()})")
        return json.loads(raw)["user"], f"session:{sid}"

    def _where_lost(self) -> str:
        return (f"backend {self.backend} has no such session in its memory"
                if self.design is Design.MEMORY else "the store has no such session")

    def _cart(self, key: str, now: float) -> list[str]:
        raw = self.store.get(f"cart:{key}", now)
        return json.loads(raw) if raw else []

    def _logout(self, req: Request, key: str, now: float) -> Response:
        if self.design is Design.JWT:
            if not self.denylist:
                return _json(200, logged_out=False,
                             note="the token stays valid until it expires: nothing here "
                                  "remembers it (start the backend with a deny-list)")
            import jwt

            claims = jwt.decode(req.headers["authorization"][7:], self.secret,
                                algorithms=["HS256"])
            self.store.set(f"deny:{claims['jti']}", "1", max(1, claims["exp"] - now), now)
            return _json(200, logged_out=True,
                         note="the token's id is on the deny-list until it expires: every "
                              "request now costs a store lookup")
        self.store.delete(key)
        return _json(200, logged_out=True)

    def _lab_sessions(self, req: Request, now: float) -> Response:
        """Lab only: create N sessions at once, to measure what sessions cost in memory."""
        try:
            n = int(req.fields().get("n", "0"))
        except ValueError:
            n = 0
        n = max(0, min(n, 200_000))
        self.store.set_many([(f"session:{secrets.token_urlsafe(32)}",
                              json.dumps({"user": f"load{i}"})) for i in range(n)],
                            SESSION_TTL, now)
        return _json(200, created=n, sessions=self.store.count("session:"))
