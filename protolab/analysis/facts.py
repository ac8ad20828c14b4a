"""What a packet does to state, as data: who holds it (`Holder`), what the packet does to it
(`Action`), the fact (`Kind`, `Fact`), and the row the annotator gives each packet (`Row`). Each
row's "where state lives" sentence is rendered from its fact by one table, `TEMPLATES`: nothing
reads the sentence back, so rewording it changes no check, table or flow. The words (Holder,
Action, Kind, TEMPLATES) are kept in protolab.analysis.fact_kinds, plain data, and read from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from operator import attrgetter, itemgetter
from string import Formatter
from typing import TYPE_CHECKING

from protolab.analysis.fact_kinds import TEMPLATES, Action, Holder, Kind

if TYPE_CHECKING:  # a fact holds transitions; facts need not import the TCP model to say so
    from protolab.protocols.tcp import Transition

#: How many recent rows (and recent datagrams, to spot a relay's copy) the annotator keeps: an
#: ICMP error or a later packet can still amend a row while it is in this window.
WINDOW = 32
#: At most this many entries in any of the annotator's tables (pending queries, last packets).
MAX_PENDING = 100_000


@dataclass(slots=True, unsafe_hash=True)
class Fact:
    """What a packet does to state, as data; `render` turns it into the row's sentence. Made
    once per packet, so not frozen (its init would cost a call per field); nothing changes a
    fact once made: `dataclasses.replace` makes another."""

    kind: Kind
    refs: tuple[int, ...] = ()  #: the packets it refers to (the query, the ICMP error)
    key: str = ""  #: the key of the state: a query id, a DCID, a 4-tuple
    moves: tuple[Transition, ...] = ()  #: TCP state transitions this packet causes (model)
    also: tuple[Kind, ...] = ()  #: further facts about the same packet (rotation, migration)
    values: dict = field(default_factory=dict, compare=False)  #: what the sentence names

    def shows(self, kind: Kind) -> bool:
        return self.kind is kind or kind in self.also


@dataclass(slots=True)
class Row:
    """One packet's annotation. Not frozen: the annotator finishes a row in place (its summary,
    flow and fields) rather than copying it, the copy cost more than the rest of the row."""

    number: int
    time: float  #: seconds since the first packet
    src: str
    dst: str
    proto: str
    summary: str
    action: Action
    holders: tuple[Holder, ...]
    fact: Fact  #: what this packet does to state; the sentence is rendered from it
    flow: str = ""  #: the conversation this packet belongs to ("tcp 3", "quic 1", "dns a↔b")
    fields: dict = field(default_factory=dict, compare=False)  #: decoded values, for --json

    @property
    def state(self) -> str:
        """The "where state lives" sentence, rendered from the fact."""
        return render(self.fact)

    def shows(self, kind: Kind) -> bool:
        return self.fact.shows(kind)

    def where(self) -> str:
        """The sentence, after what the packet does ("creates: ...") unless it does nothing."""
        return ACTION_PREFIX[self.action] + render(self.fact)


def row_of(base: dict, action: Action, holders: tuple[Holder, ...], fact: Fact,
           summary: str | None = None) -> Row:
    """`Row(**base, action=action, holders=holders, fact=fact)` (and `summary=summary`, unless
    None: then the base's), the row's fields given in order: the call with `**base` merged a
    dict and matched every keyword, once per packet, for a third of the cost of the row."""
    return Row(base["number"], base["time"], base["src"], base["dst"], base["proto"],
               base["summary"] if summary is None else summary, action, holders, fact,
               base.get("flow", ""), base.get("fields", {}))


#: what `Row.where` puts before the sentence, per action (Enum's `.value` is a Python call)
ACTION_PREFIX = {action: "" if action is Action.NONE else f"{action.value}: "
                  for action in Action}


def render(fact: Fact) -> str:
    """The sentence for a fact, from `TEMPLATES` (and each `also` fact's sentence after it)."""
    if not fact.also:  # nearly every fact: one sentence
        return _SENTENCES[TEMPLATES[fact.kind]](fact)
    templates = [TEMPLATES[fact.kind], *(TEMPLATES[kind] for kind in fact.also)]
    values = _values(fact, frozenset().union(*map(_wanted, templates)))
    return "; ".join(_percent(template) % values for template in templates)


#: the format specs a template may give a value ("{rtt_ms:.0f}", "{low:#04x}"): the ones whose
#: %-format is the same (`_percent`)
_SPEC = re.compile(r"#?0?\d*(\.\d+)?[dfx]")


@cache
def _percent(template: str, positional: bool = False) -> str:
    """`template` as a %-format of the same values ("{rtt_ms:.0f}" → "%(rtt_ms).0f"), made once
    per template: `str.format_map` parses its template on every call, `%` costs a third less
    (same text: "%s" is `str`, as `format` with no spec; the specs are checked by `_SPEC`).
    `positional`: of the values in the order the template names them ("%.0f")."""
    parts = []
    for literal, name, spec, conversion in Formatter().parse(template):
        parts.append(literal.replace("%", "%%"))
        if name is None:
            continue
        if conversion or not name.isidentifier() or (spec and not _SPEC.fullmatch(spec)):
            raise ValueError(f"template field {{{name}}} has no %-format: {template!r}")
        parts.append(f"%{'' if positional else f'({name})'}{spec or 's'}")
    return "".join(parts)


class _Made(dict):
    """`make(key)` by key, made the first time a key is looked up and kept: looked up by dict's
    own __getitem__ (no Python call per row, as a functools.cache would be)."""

    def __init__(self, make: Callable) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: object) -> object:
        value = self[key] = self._make(key)
        return value


def _sentence_of(template: str) -> Callable[[Fact], str]:
    """`render` of a fact of one `also`-less template, in one Python call per row: its %-format
    of the fact's values, with the derived values it names when it names some (`_values_maker`;
    one such value made in the call itself, most templates: a TCP sentence's moves, a DNS or
    QUIC key). A template of two values or more is a positional %-format of the values an
    itemgetter picks in order (`%` looks each name up by a string it makes again every time,
    the itemgetter by the names made once); of one or none, by name (`%` takes a lone value
    as the one: a tuple would be taken apart)."""
    derived = _wanted(template)
    derive = _values_maker(derived)
    names = [name for _, name, _, _ in Formatter().parse(template) if name is not None]
    if len(names) < 2:
        percent = _percent(template)
        if derive is None:
            return lambda fact: percent % fact.values
        return lambda fact: percent % derive(fact)
    percent, pick = _percent(template, positional=True), itemgetter(*names)
    if derive is None:
        return lambda fact: percent % pick(fact.values)
    if len(derived) == 1:  # (`derive`'s own dict, without its call)
        [name] = derived
        make = _DERIVED[name]
        return lambda fact: percent % pick({name: make(fact), **fact.values})
    return lambda fact: percent % pick(derive(fact))


#: the function that renders a template's sentence from a fact, by template (by the template's
#: text, not its kind: a test rewords TEMPLATES)
_SENTENCES = _Made(_sentence_of)


def _values(fact: Fact, derived: frozenset[str]) -> dict:
    """The fact's values, and the `derived` ones its templates name (made only then: per row);
    the fact's own win, as in {**derived, **values}."""
    make = _values_maker(derived)
    return fact.values if make is None else make(fact)


@cache
def _values_maker(derived: frozenset[str]) -> Callable[[Fact], dict] | None:
    """`_values(fact, derived)` as a function of the fact, made once per set of names: None
    when no derived value is named (most templates: the fact's own values serve), else one
    dict built in one step, the derived values first so that the fact's own win."""
    made = tuple((name, _DERIVED[name]) for name in sorted(derived))
    if not made:
        return None

    def values_of(fact: Fact) -> dict:
        values = {name: make(fact) for name, make in made}
        values.update(fact.values)
        return values

    return values_of


def _refs(fact: Fact) -> str:
    return ", ".join([f"#{n}" for n in fact.refs])


def _ref(fact: Fact) -> str:
    return f"#{fact.refs[0]}" if fact.refs else ""


@cache
def _wanted(template: str) -> frozenset[str]:
    """Which of `_DERIVED` a template names (worked out once per template)."""
    return _names(template) & frozenset(_DERIVED)


@cache
def _names(template: str) -> frozenset[str]:
    """The values a template names ("rtt_ms" for "{rtt_ms:.0f}")."""
    return frozenset(re.match(r"\w*", name)[0] for _, name, _, _ in Formatter().parse(template)
                     if name is not None)


def _moves(fact: Fact) -> str:
    if fact.values.get("states_known") is False:
        return (" [states unknown: the handshake is not in this capture; client and server are "
                "guessed from the ports]")
    if not fact.moves:
        return ""
    return f" [{'; '.join(map(_MOVE_TEXTS.__getitem__, map(_ROLE_OLD_NEW, fact.moves)))}]"


def _move_text(move: tuple[Enum, Enum, Enum]) -> str:
    role, old, new = move
    return f"{role.value} {old.value}→{new.value}"


#: "client SYN_SENT→ESTABLISHED" by (role, old state, new state): the few there are
_MOVE_TEXTS = _Made(_move_text)
_ROLE_OLD_NEW = attrgetter("role", "old", "new")


#: the values `render` makes from a fact's other fields, when a template names them, and how
_DERIVED: dict[str, Callable[[Fact], str]] = {"key": attrgetter("key"), "refs": _refs,
                                              "ref": _ref, "moves": _moves}
