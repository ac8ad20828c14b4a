"""The chat's shared state in a real Redis: message ids (INCR), the history (a sorted set by id)
and the fan-out to every backend (pub/sub).

Where state lives: in the Redis server, outside every backend process, so it outlives their
restarts. One Lua script numbers a message, keeps it (the resume design) and publishes it, all at
once (Redis runs a script atomically): the order of ids is the order every subscriber receives
them in. Pub/sub itself keeps nothing: a backend that is not subscribed at that moment (it is
restarting) never gets the message, and neither do the clients it would have sent it to; only the
history lets them catch up. Every key is under `protolab:chat:<room>` (`REDIS_PREFIX`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from protolab.net.stores import REDIS_PREFIX
from protolab.protocols.chat import MAX_HISTORY, ChatMessage

#: KEYS: ids, log ("" for none), channel; ARGV: the message without its id, the history's bound
_POST = """
local id = redis.call('INCR', KEYS[1])
local m = id .. ' ' .. ARGV[1]
if KEYS[2] ~= '' then
  redis.call('ZADD', KEYS[2], id, m)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[2]) - 1)
end
redis.call('PUBLISH', KEYS[3], m)
return id
"""


def _message(raw: str) -> ChatMessage | None:
    number, _, body = raw.partition(" ")
    try:
        obj = json.loads(body)
        return ChatMessage(int(number), obj["user"], obj["text"], obj["seq"], obj["via"])
    except (ValueError, KeyError, TypeError):
        return None


class RedisChat:
    """One chat room in a Redis: post, read the history after an id, subscribe."""

    def __init__(self, url: str, room: str) -> None:
        import redis

        self.url, self.room = url, room
        self._r = redis.Redis.from_url(url, decode_responses=True)
        base = f"{REDIS_PREFIX}chat:{room}"
        self.ids, self.log, self.channel = f"{base}:ids", f"{base}:log", base
        self._post = self._r.register_script(_POST)

    def post(self, user: str, text: str, seq: str, via: str, keep: bool) -> int:
        body = json.dumps({"user": user, "text": text, "seq": seq, "via": via})
        return int(self._post(keys=[self.ids, self.log if keep else "", self.channel],
                              args=[body, MAX_HISTORY]))

    def since(self, last: int) -> list[ChatMessage]:
        """The kept messages after id `last`, in order."""
        raw = self._r.zrangebyscore(self.log, f"({last}", "+inf")
        return [m for m in map(_message, raw) if m is not None]

    def subscribe(self, deliver: Callable[[ChatMessage], None]) -> threading.Thread:
        """Subscribe now (confirmed by Redis before this returns); a daemon thread then hands
        each published message to `deliver`, in order."""
        pubsub = self._r.pubsub()
        pubsub.subscribe(self.channel)
        confirmed = pubsub.get_message(timeout=10)
        if not confirmed or confirmed.get("type") != "subscribe":
            raise ConnectionError(f"Redis did not confirm the subscription to {self.channel}")

        def listen() -> None:
            for item in pubsub.listen():
                if item.get("type") == "message" and (m := _message(item["data"])) is not None:
                    deliver(m)

        thread = threading.Thread(target=listen, name="redis-subscriber", daemon=True)
        thread.start()
        return thread

    def kept(self) -> int:
        """How many messages the history holds."""
        return int(self._r.zcard(self.log))

    def wipe(self) -> None:
        """Delete this room's keys (nothing else in the database)."""
        self._r.delete(self.ids, self.log)
