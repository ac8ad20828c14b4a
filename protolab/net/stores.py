"""Where the web app's sessions and carts are kept: a dict in the process, SQLite, or Redis.

Where state lives: `MemoryStore` in the backend process's memory (the `memory` design),
`SqliteStore` in a file every backend opens, `RedisStore` in a Redis server; each implements
`protolab.protocols.webapp.Store`. In Redis protolab touches only keys under `REDIS_PREFIX`.
"""

from __future__ import annotations

import sqlite3
import threading

from protolab.protocols.webapp import Store


class MemoryStore:
    """A dict in this process (the `memory` design's state, and its weakness)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, now: float) -> str | None:
        with self._lock:
            item = self._data.get(key)
            if item is None or item[1] <= now:
                self._data.pop(key, None)
                return None
            return item[0]

    def set(self, key: str, value: str, ttl: float, now: float) -> None:
        with self._lock:
            self._data[key] = (value, now + ttl)

    def set_many(self, items: list[tuple[str, str]], ttl: float, now: float) -> None:
        with self._lock:
            self._data.update((key, (value, now + ttl)) for key, value in items)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def wipe(self) -> None:
        with self._lock:
            self._data.clear()

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for k in self._data if k.startswith(prefix))


class SqliteStore:
    """A shared SQLite file: every backend process opens the same one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT, "
                       "expires REAL)")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a crash of a backend
            # loses nothing, a power cut may lose the last sessions (sqlite.org/pragma.html
            # #pragma_synchronous). A session store trades that for not waiting on the disk.
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def get(self, key: str, now: float) -> str | None:
        row = self._db().execute("SELECT value FROM kv WHERE key=? AND expires>?",
                                 (key, now)).fetchone()
        return row[0] if row else None

    def set(self, key: str, value: str, ttl: float, now: float) -> None:
        self._db().execute("INSERT OR REPLACE INTO kv VALUES (?,?,?)", (key, value, now + ttl))

    def set_many(self, items: list[tuple[str, str]], ttl: float, now: float) -> None:
        """All rows in one transaction: one commit (one wait for the disk), not one per row."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO kv VALUES (?,?,?)",
                           ((key, value, now + ttl) for key, value in items))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def delete(self, key: str) -> None:
        self._db().execute("DELETE FROM kv WHERE key=?", (key,))

    def wipe(self) -> None:
        self._db().execute("DELETE FROM kv")

    def count(self, prefix: str) -> int:
        return self._db().execute("SELECT COUNT(*) FROM kv WHERE key LIKE ?",
                                  (prefix + "%",)).fetchone()[0]


#: Every key protolab writes to a Redis starts with this: it reads, counts and wipes only these, so
#: a database that also holds other keys keeps them (and protolab refuses it unless told).
REDIS_PREFIX = "protolab:"


class RedisStore:
    """A real Redis: SETEX gives each session its TTL (the server expires it, not us). Every key
    is under `prefix`; nothing else in the database is read, counted or deleted."""

    def __init__(self, url: str, prefix: str = REDIS_PREFIX) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self._r = redis.Redis.from_url(url, decode_responses=True)

    def get(self, key: str, now: float) -> str | None:
        return self._r.get(self.prefix + key)

    def set(self, key: str, value: str, ttl: float, now: float) -> None:
        self._r.setex(self.prefix + key, max(1, int(ttl)), value)

    def set_many(self, items: list[tuple[str, str]], ttl: float, now: float) -> None:
        pipe = self._r.pipeline(transaction=False)  # one round trip for the batch
        for key, value in items:
            pipe.setex(self.prefix + key, max(1, int(ttl)), value)
        pipe.execute()

    def delete(self, key: str) -> None:
        self._r.delete(self.prefix + key)

    def _own(self, prefix: str = "") -> list[str]:
        return list(self._r.scan_iter(match=_glob_escape(self.prefix + prefix) + "*", count=1000))

    def wipe(self) -> None:
        """Delete protolab's keys (never FLUSHDB: the database may hold other keys)."""
        keys = self._own()
        for i in range(0, len(keys), 1000):
            self._r.delete(*keys[i:i + 1000])

    def count(self, prefix: str) -> int:
        return len(self._own(prefix))

    def foreign(self, limit: int = 3) -> list[str]:
        """Up to `limit` keys of this database that protolab did not create."""
        found = []
        for key in self._r.scan_iter(count=1000):
            if not key.startswith(self.prefix):
                found.append(key)
                if len(found) >= limit:
                    break
        return found


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern (glob-style)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def redis_refusal(url: str, shared: bool) -> str:
    """Why protolab will not use the Redis database at `url` ("" when it may): it holds keys
    protolab did not create, and `shared` (--redis-shared) was not given. Raises the client's
    error when there is no Redis there."""
    if shared:
        RedisStore(url).count("")  # still: is there a Redis at all?
        return ""
    others = RedisStore(url).foreign()
    if not others:
        return ""
    shown = ", ".join(repr(k) for k in others)
    return (f"the Redis database {url} holds keys protolab did not create (e.g. {shown}); "
            f"protolab writes, counts and wipes only keys under {REDIS_PREFIX!r}: pass "
            f"--redis-shared to use this database anyway, or name an empty one "
            f"(e.g. redis://127.0.0.1:6379/15)")


def open_store(url: str | None) -> Store:
    """`None` or `memory:` → in-process; `sqlite:PATH`; `redis://HOST:PORT[/DB]`."""
    if url is None or url == "memory:":
        return MemoryStore()
    if url.startswith("sqlite:"):
        return SqliteStore(url[len("sqlite:"):])
    if url.startswith("redis://"):
        return RedisStore(url)
    raise ValueError(f"unknown store {url!r}: use sqlite:PATH or redis://HOST:PORT")
