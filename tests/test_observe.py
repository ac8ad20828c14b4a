"""The observation vocabulary: a claim without evidence is never printed as observed."""

from __future__ import annotations

from protolab.analysis.observe import (
    Evidence,
    Findings,
    StateRow,
    Status,
    explain,
    observe,
    where_rows,
)


def test_ok_without_evidence_is_not_observed():
    o = observe("k", "the claim", True)
    assert o.status is Status.NOT_OBSERVED
    assert o.line().startswith("NOT OBSERVED: the claim")


def test_observed_line_carries_its_evidence():
    o = observe("k", "claim", True, seen="answered", evidence=[Evidence("server pid", 10, 11),
                                                               Evidence("packets",
                                                                        packets=(3, 5))])
    assert o.observed
    assert o.line() == "observed: answered [server pid 10 → 11; packets #3, #5]"


def test_failed_observation_makes_a_problem_and_explanations_do_not():
    f = Findings()
    f.add(explain("e", "UDP has no handshake"))
    assert f.problem() == ""
    f.where.append(StateRow("s", "h", "d", observe("row.k", "c", False, why_not="no reply")))
    assert f.problem() == "not observed: row.k"


def test_explanations_are_marked_in_every_cell_that_could_read_as_a_finding():
    [(state, holder, did, happened, evidence)] = where_rows(
        [StateRow("s", "h", "restarted it", explain("e", "nothing is lost", "not in this demo"))])
    assert did == "(not tried here)"
    assert happened.startswith("(not tried here) explanation:")
    assert evidence == "not in this demo"
