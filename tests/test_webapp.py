"""The application core, sans-IO: three designs, the same API, different places for state."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protolab.net.stores import MemoryStore, SqliteStore
from protolab.protocols.webapp import App, Design, Request, UserDb

SECRET = b"k" * 32
USERS = UserDb.lab()


def req(method: str, path: str, fields: dict | None = None, cookie: str = "",
        token: str = "") -> Request:
    headers = {"content-type": "application/json"}
    if cookie:
        headers["cookie"] = cookie
    if token:
        headers["authorization"] = f"Bearer {token}"
    return Request(method, path, headers, json.dumps(fields).encode() if fields else b"")


def login(app: App, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    r = app.handle(req("POST", "/login", {"user": "alice", "password": "wonderland"}), now)
    assert r.status == 200
    cookie = dict(r.headers).get("Set-Cookie", "")
    return {"cookie": cookie.split(";", 1)[0], "token": r.body.get("token", "")}


@pytest.fixture(params=list(Design), ids=lambda d: d.value)
def app(request, tmp_path):
    store = MemoryStore() if request.param is Design.MEMORY else \
        SqliteStore(str(tmp_path / "s.db"))
    return App(request.param, store, "b1", secret=SECRET, users=USERS)


def test_the_same_api_in_every_design(app) -> None:
    auth = login(app)
    assert app.handle(req("GET", "/profile", **auth), time.time()).body["user"] == "alice"
    added = app.handle(req("POST", "/cart/items", {"item": "tea"}, **auth), time.time())
    assert added.status == 200
    assert app.handle(req("GET", "/cart", **auth), time.time()).body["items"] == ["tea"]
    assert app.handle(req("GET", "/cart"), time.time()).status == 401


def test_wrong_password_and_unknown_user(app) -> None:
    for user, pw in (("alice", "nope"), ("mallory", "wonderland")):
        answer = app.handle(req("POST", "/login", {"user": user, "password": pw}), time.time())
        assert answer.status == 401


def test_passwords_are_stored_hashed() -> None:
    for salt, digest in USERS.hashes.values():
        assert len(salt) == 16 and len(digest) == 32 and digest != b"wonderland"
    assert USERS.check("bob", "builder") and not USERS.check("bob", "Builder")


def test_session_cookie_is_random_httponly_samesite() -> None:
    app = App(Design.MEMORY, MemoryStore(), "b1", users=USERS)
    r = app.handle(req("POST", "/login", {"user": "alice", "password": "wonderland"}), time.time())
    cookie = dict(r.headers)["Set-Cookie"]
    sid = cookie.split(";", 1)[0].split("=", 1)[1]
    assert len(sid) >= 43 and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    other = App(Design.MEMORY, MemoryStore(), "b1", users=USERS).handle(
        req("POST", "/login", {"user": "alice", "password": "wonderland"}), time.time())
    assert dict(other.headers)["Set-Cookie"] != cookie


def test_memory_sessions_live_in_one_process_store_sessions_in_the_store(tmp_path) -> None:
    mem_a = App(Design.MEMORY, MemoryStore(), "b1", users=USERS)
    mem_b = App(Design.MEMORY, MemoryStore(), "b2", users=USERS)
    assert mem_b.handle(req("GET", "/profile", **login(mem_a)), time.time()).status == 401
    shared = str(tmp_path / "s.db")
    st_a = App(Design.STORE, SqliteStore(shared), "b1", users=USERS)
    st_b = App(Design.STORE, SqliteStore(shared), "b2", users=USERS)
    assert st_b.handle(req("GET", "/profile", **login(st_a)), time.time()).body["backend"] == "b2"


def test_sessions_expire() -> None:
    app = App(Design.STORE, MemoryStore(), "b1", users=USERS)
    auth = login(app, now=0.0)
    assert app.handle(req("GET", "/profile", **auth), 1799.0).status == 200
    assert app.handle(req("GET", "/profile", **auth), 1801.0).status == 401


def _bad_tokens(good: str) -> dict[str, str]:
    claims = jwt.decode(good, SECRET, algorithms=["HS256"])
    header, payload, sig = good.split(".")
    tampered_claims = {**claims, "sub": "bob"}
    tampered_payload = jwt.encode(tampered_claims, SECRET, algorithm="HS256").split(".")[1]
    return {
        "alg=none": jwt.encode(claims, None, algorithm="none"),
        "wrong key": jwt.encode(claims, b"x" * 32, algorithm="HS256"),
        "tampered payload": f"{header}.{tampered_payload}.{sig}",
        "expired": jwt.encode({**claims, "exp": int(time.time()) - 10}, SECRET,
                              algorithm="HS256"),
    }


@pytest.mark.parametrize("kind", ["alg=none", "wrong key", "tampered payload", "expired"])
def test_jwt_rejects_bad_tokens(kind) -> None:
    app = App(Design.JWT, MemoryStore(), "b1", secret=SECRET, users=USERS)
    good = login(app, now=time.time())["token"]
    assert app.handle(req("GET", "/profile", token=good), time.time()).status == 200
    bad = _bad_tokens(good)[kind]
    r = app.handle(req("GET", "/profile", token=bad), time.time())
    assert r.status == 401, r.body


def test_jwt_logout_needs_a_denylist() -> None:
    for denylist, after in ((False, 200), (True, 401)):
        store = MemoryStore()
        app = App(Design.JWT, store, "b1", secret=SECRET, denylist=denylist, users=USERS)
        token = login(app, now=time.time())["token"]
        out = app.handle(req("POST", "/logout", token=token), time.time())
        assert out.body["logged_out"] is denylist
        assert app.handle(req("GET", "/profile", token=token), time.time()).status == after
        assert store.count("deny:") == (1 if denylist else 0)  # the deny-list IS state


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["GET", "POST", "PUT"]), st.text(max_size=30), st.binary(max_size=200),
       st.text(max_size=80))
def test_any_request_gets_a_response(method, path, body, cookie) -> None:
    for design in Design:
        app = App(design, MemoryStore(), "b1", secret=SECRET, users=USERS)
        r = app.handle(Request(method, "/" + path, {"cookie": cookie,
                                                    "authorization": "Bearer " + cookie,
                                                    "content-type": "application/json"}, body),
                       time.time())
        assert 200 <= r.status < 500 and isinstance(r.encode_body(), bytes)


def _transactions(statements: list[str]) -> int:
    """Write transactions in SQLite's own trace: each BEGIN, and each write outside one
    (autocommit: a transaction, a commit, a wait for the disk of its own)."""
    count, inside = 0, False
    for sql in statements:
        word = sql.split(None, 1)[0].upper()
        if word == "BEGIN":
            count, inside = count + 1, True
        elif word in ("COMMIT", "END", "ROLLBACK"):
            inside = False
        elif word in ("INSERT", "REPLACE", "UPDATE", "DELETE") and not inside:
            count += 1
    return count


def test_bulk_session_creation_is_one_transaction(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    app = App(Design.STORE, store, "b1", users=USERS, lab_endpoints=True)
    statements: list[str] = []
    store._db().set_trace_callback(statements.append)  # this thread's connection: the app's
    r = app.handle(req("POST", "/lab/sessions", {"n": 300}), time.time())
    assert r.status == 200 and r.body == {"created": 300, "sessions": 300}
    assert _transactions(statements) == 1, statements[:5]


def _login_as(ctype: str | None, body: bytes) -> tuple[int, dict]:
    app = App(Design.MEMORY, MemoryStore(), "b1", users=USERS)
    headers = {"content-type": ctype} if ctype is not None else {}
    r = app.handle(Request("POST", "/login", headers, body), time.time())
    return r.status, r.body


def test_logins_as_json_or_form_and_a_reason_for_anything_else() -> None:
    as_json = json.dumps({"user": "alice", "password": "wonderland"}).encode()
    assert _login_as("application/json", as_json)[0] == 200
    assert _login_as("application/json; charset=utf-8", as_json)[0] == 200
    assert _login_as("application/x-www-form-urlencoded", b"user=alice&password=wonderland")[0] \
        == 200
    assert _login_as("application/x-www-form-urlencoded", b"user=carol&password=correct+horse"
                     )[0] == 200
    # curl -d '{"user": ...}' says it is a form: not "wrong user or password", but why
    status, body = _login_as("application/x-www-form-urlencoded", as_json)
    assert status == 415 and "Content-Type: application/json" in body["error"]
    for ctype in ("text/plain", None):
        status, body = _login_as(ctype, as_json)
        assert status == 415 and "application/x-www-form-urlencoded" in body["error"]
    assert _login_as("application/x-www-form-urlencoded", b"user=alice&password=nope")[0] == 401


@pytest.mark.parametrize("body", [b"[" * 60_000, b'{"user": ' + b"[" * 60_000,
                                  b'{"user": "alice", "password": ' + b"{\"a\": " * 9_000 + b"1"
                                  + b"}" * 9_000 + b"}", b"not json", b'["alice"]'],
                         ids=["list bomb", "cut bomb", "object bomb", "not json", "not object"])
def test_a_json_body_that_cannot_be_read_is_a_400(body) -> None:
    status, answer = _login_as("application/json", body)
    assert status == 400 and "JSON object" in answer["error"]
