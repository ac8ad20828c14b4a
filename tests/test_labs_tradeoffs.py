"""The trade-offs, measured: a step that cannot finish says which and why; sessions in batches."""

from __future__ import annotations

import pytest

from protolab.cli import main
from protolab.labs import tradeoffs
from protolab.labs.cluster import Client, Variant
from protolab.protocols.webapp import Design


def test_a_measurement_that_cannot_finish_says_so_and_the_table_still_prints(monkeypatch,
                                                                              capsys) -> None:
    """Issue 13 item 1: POST /lab/sessions timing out (a slow disk) crashed `protolab litmus`."""
    real = Client.request

    def slow_disk(self, method, path, fields=None):
        if path == "/lab/sessions":
            raise TimeoutError("timed out")
        return real(self, method, path, fields)

    monkeypatch.setattr(Client, "request", slow_disk)
    code = main(["litmus", "--designs", "store-sqlite", "jwt", "--policies", "round-robin"])
    text = capsys.readouterr().out
    assert code == 1, text
    [failed] = [line for line in text.splitlines() if line.startswith("NOT OBSERVED: the trade")]
    assert failed.startswith("NOT OBSERVED: the trade-offs of store (sqlite) — could not finish:"
                             " POST /lab/sessions (sessions 1-2000): TimeoutError: timed out")
    [jwt_row] = [line for line in text.splitlines() if line.startswith("jwt ")]
    assert "none: in the tokens" in jwt_row  # the rest of the table printed


def test_measure_creates_sessions_in_batches_each_answered(tmp_path) -> None:
    seen: list[int] = []
    real = Client.request

    def count(self, method, path, fields=None):
        reply = real(self, method, path, fields)
        if path == "/lab/sessions":
            assert reply.status == 200
            seen.append(reply.body["created"])
        return reply

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Client, "request", count)
        t = tradeoffs.measure(Variant(Design.STORE, f"sqlite:{tmp_path}/s.db"), requests=40,
                              sessions=(100, 4500))
    assert not t.unfinished and sum(seen) == 4500 and max(seen) <= tradeoffs.SESSION_BATCH
    assert t.bytes_per_session_store > 0
