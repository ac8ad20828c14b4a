"""States as data: transition tables keyed by (role, state) -> event -> next state.

Where state lives: in whoever holds the object that `advance` is called on. This module holds no
state at all; it gives each protocol one printable, testable table (the h11 `_state.py` style) and a
single error for an illegal move that names the role, the state and the event.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

Table = Mapping[tuple[Enum, Enum], Mapping[Enum, Enum]]


class ProtocolError(Exception):
    """Our own protocol error: the only exception a sans-IO core raises on bad input."""


class IllegalTransition(ProtocolError):
    def __init__(self, role: Enum, state: Enum, event: Enum) -> None:
        super().__init__(f"{role.name} in state {state.name} cannot take event {event.name}")
        self.role, self.state, self.event = role, state, event


def advance(table: Table, role: Enum, state: Enum, event: Enum) -> Enum:
    """The next state, or IllegalTransition naming role, state and event."""
    try:
        return table[(role, state)][event]
    except KeyError:
        raise IllegalTransition(role, state, event) from None


def table_rows(table: Table) -> list[tuple[str, str, str, str]]:
    """The table as rows (role, state, event, next state), for printing and tests."""
    return [(role.name, state.name, event.name, nxt.name)
            for (role, state), moves in table.items() for event, nxt in moves.items()]
