"""`protolab inspect CAPTURE --exposed`: the credentials and session material a capture gives away.

Where state lives: a session cookie is the key to the server's session (in a backend's memory or a
shared store); a bearer token (a JWT) is the session itself, signed, in the client's hands; a
login's password is what makes either. In cleartext HTTP all three are bytes in the capture: whoever
holds the file can replay them (RFC 6265 section 8.3: "cookies ... are sent in the clear"; RFC
6750 section 5.3: bearer tokens must be protected by TLS). Each is read from its direction's
reassembled TCP stream (`protolab.analysis.http_streams`), with the packet that carries its first
byte. A TLS connection's records are counted, not read: without the key log nothing in them is
exposed.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import parse_qs

from protolab.analysis.http_streams import HttpMessage, http_messages
from protolab.protocols.tls import is_tls_record
from protolab.wire.packets import Decoded

Out = Callable[[str], None]
Numbered = Iterable[tuple[int, Decoded]]


class Material(Enum):
    PASSWORD = "password"  #: a login body's user and password
    SESSION_SET = "session set"  #: Set-Cookie: the server hands the client its session key
    COOKIE = "cookie sent"  #: Cookie: the client presents a cookie
    BEARER = "bearer token"  #: Authorization: Bearer: the client presents a token
    TOKEN_ISSUED = "token issued"  #: a response body's `token` (a login of the jwt design)


@dataclass(frozen=True)
class Exposed:
    """One secret in the clear: where it is and what it is."""

    number: int  #: the packet that carries it: the message's first byte, or its body's
    src: str
    dst: str
    material: Material
    name: str  #: the cookie's name, `Authorization`, `password`, `token`
    value: str  #: the whole value: what a replay sends
    note: str = ""  #: the cookie's attributes, the token's claims, the user

    def line(self) -> str:
        note = f"  ({self.note})" if self.note else ""
        return (f"#{self.number:<5} {self.src} → {self.dst}  {self.material.value}: "
                f"{self.name}={self.value}{note}")


@dataclass
class Scan:
    """What a capture exposes, and what it holds that cannot be read."""

    items: list[Exposed] = field(default_factory=list)
    messages: int = 0  #: HTTP/1.x messages read in the clear
    tls: list[tuple[int, str, str]] = field(default_factory=list)  #: (first #, client, server)
    packets: int = 0


def cookie_attributes(set_cookie: str) -> dict[str, str]:
    """A Set-Cookie header's attributes (RFC 6265 section 5.2), names lower-cased."""
    attrs = {}
    for part in set_cookie.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name:
            attrs[name.lower()] = value
    return attrs


def flags_text(set_cookie: str) -> str:
    attrs = cookie_attributes(set_cookie)
    shown = [p.strip() for p in set_cookie.split(";")[1:] if p.strip()]
    missing = [f"no {f}" for f in ("Secure", "HttpOnly") if f.lower() not in attrs]
    return "; ".join(shown + missing)


def jwt_claims(token: str) -> dict | None:
    """A JWT's claims (RFC 7519): base64url JSON, readable by anyone, not checked here."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _claims_text(token: str) -> str:
    claims = jwt_claims(token)
    if claims is None:
        return ""
    shown = ", ".join(f"{k}={claims[k]}" for k in ("sub", "exp", "jti") if k in claims)
    return f"JWT, readable by anyone: {shown}"


def _body_fields(m: HttpMessage) -> dict[str, str]:
    ctype = (m.header("content-type") or "").split(";", 1)[0].strip().lower()
    text = m.body.decode("utf-8", "replace")
    try:
        if ctype == "application/json" or text.lstrip().startswith("{"):
            data = json.loads(text)
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except ValueError:
        return {}
    return {k: v[0] for k, v in parse_qs(text, max_num_fields=100).items()}


def _of_message(m: HttpMessage) -> list[Exposed]:
    def item(material: Material, name: str, value: str, note: str = "",
             number: int = 0) -> Exposed:
        return Exposed(number or m.number, m.src, m.dst, material, name, value, note)

    found = []
    for value in m.all("set-cookie"):
        name, _, rest = value.partition("=")
        found.append(item(Material.SESSION_SET, name.strip(), rest.split(";", 1)[0].strip(),
                          flags_text(value)))
    for header in m.all("cookie"):
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            if name:
                found.append(item(Material.COOKIE, name, value))
    auth = m.header("authorization") or ""
    if auth.lower().startswith("bearer "):
        found.append(item(Material.BEARER, "Authorization", auth, _claims_text(auth[7:])))
    fields = _body_fields(m) if m.body else {}
    if not m.is_response and "password" in fields:
        found.append(item(Material.PASSWORD, "password", fields["password"],
                          f"user={fields.get('user', fields.get('username', '?'))}",
                          m.body_number))
    if m.is_response and "token" in fields:
        found.append(item(Material.TOKEN_ISSUED, "token", fields["token"],
                          _claims_text(fields["token"]), m.body_number))
    return found


def scan(packets: Numbered) -> Scan:
    """The secrets in (packet number, decoded frame) pairs, and the TLS connections."""
    chosen = list(packets)
    result = Scan(packets=len(chosen))
    messages = http_messages(chosen)
    result.messages = len(messages)
    result.items = [e for m in messages for e in _of_message(m)]
    seen: set[tuple] = set()
    for number, d in chosen:
        if d.tcp is not None and d.payload and is_tls_record(d.payload):
            key = frozenset(((d.src, d.sport), (d.dst, d.dport)))
            if key not in seen:
                seen.add(key)
                result.tls.append((number, d.endpoint("src"), d.endpoint("dst")))
    return result


def scan_file(path: str | os.PathLike[str], pred: Callable | None = None) -> Scan:
    """`scan` of a capture file; with `pred` (a compiled --filter), of the packets it chooses."""
    from protolab.analysis.annotate import Annotator
    from protolab.analysis.inspect import pairs

    return scan((row.number, d) for row, d in pairs(path, Annotator())
                if pred is None or pred(row))


def report(result: Scan, source: str, out: Out) -> None:
    """The exposed items, one line each, then what could not be read; or "nothing exposed"."""
    tls = (f"{len(result.tls)} TLS connection{'s' * (len(result.tls) != 1)}: encrypted, "
           f"nothing readable without the key log" if result.tls else "no TLS connections")
    if not result.items:
        out(f"nothing exposed: no password, cookie or bearer token in the cleartext HTTP of "
            f"{source} ({result.messages} HTTP messages read in the clear, {result.packets} "
            f"packets; {tls})")
        return
    out(f"Exposed in {source}: each item as it crossed the wire, with the packet that carries "
        f"it (anyone holding this file can replay it):")
    for e in result.items:
        out("  " + e.line())
    kinds = ", ".join(f"{sum(e.material is k for e in result.items)} {k.value}"
                      for k in Material if any(e.material is k for e in result.items))
    out(f"{len(result.items)} items exposed ({kinds}) in {result.messages} HTTP messages read "
        f"in the clear; {tls}")
