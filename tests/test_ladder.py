"""The ladder model (`protolab.analysis.ladder`): its arrows are the capture's packets, its
lifelines the endpoints tshark sees, its marks the annotated rows' facts."""

from __future__ import annotations

import pytest

from protolab.analysis.facts import Kind
from protolab.analysis.ladder import By, Mark, Survey, build, endpoint

from ladder_support import forgeries, frames, overtaking, rows


@pytest.mark.parametrize("by", list(By))
def test_one_arrow_per_packet_in_the_capture_order(picture_capture, by) -> None:
    ladder = build(rows(picture_capture), by)
    assert [a.number for a in ladder.arrows] == [f.number for f in frames(picture_capture)]
    assert all(0 <= a.src < len(ladder.lifelines) and 0 <= a.dst < len(ladder.lifelines)
               for a in ladder.arrows)


def test_lifelines_are_the_endpoints_tshark_sees_in_order(picture_capture) -> None:
    seen = frames(picture_capture)
    ladder = build(rows(picture_capture))
    keys = [ln.key for ln in ladder.lifelines]
    assert len(keys) == len(set(keys))
    assert set(keys) == {end for f in seen if not f.icmp for end in (f.src, f.dst)}
    for i, lifeline in enumerate(ladder.lifelines):  # `first`: the first arrow that touches it
        assert lifeline.first == next(a.number for a in ladder.arrows if i in (a.src, a.dst))
    hosts = build(rows(picture_capture), By.HOST)
    assert {ln.key for ln in hosts.lifelines} == {endpoint(k, By.HOST) for k in keys} == \
        {end.rsplit(":", 1)[0] for f in seen for end in (f.src, f.dst)}


def test_an_icmp_error_is_drawn_back_from_the_missing_socket(picture_capture) -> None:
    seen = {f.number: f for f in frames(picture_capture)}
    ladder = build(rows(picture_capture))
    errors = [a for a in ladder.arrows if Mark.ICMP_ERROR in a.marks]
    assert [a.number for a in errors] == \
        [f.number for f in seen.values() if f.icmp and f.quoted_dst.count(":") == 1]
    for a in errors:
        frame = seen[a.number]
        assert ladder.lifelines[a.src].key == frame.quoted_dst
        assert ladder.lifelines[a.dst].key == frame.quoted_src


def test_dns_marks_are_the_facts_of_the_rows(dns_picture_capture) -> None:
    annotated = rows(dns_picture_capture)
    ladder = build(annotated)
    marked = {m: [a.number for a in ladder.arrows if m in a.marks] for m in Mark}
    # the answers that overtook an earlier query's answer, and tshark matches them the same way
    late = overtaking(annotated)
    assert late and marked[Mark.OUT_OF_ORDER] == late
    tshark = {f.number: f.response_to for f in frames(dns_picture_capture)}
    assert all(tshark[a.number] == a.refs[0] for a in ladder.arrows if a.number in late)
    # the two forged answers, dropped; every dropped arrow is a fact of dropping
    forged = forgeries(annotated)
    assert len(forged) == 2 and set(forged) <= set(marked[Mark.DROPPED])
    assert all(a.action.value == "finds missing" for a in ladder.arrows
               if Mark.DROPPED in a.marks)
    errors = [r.number for r in annotated if r.fact.kind is Kind.ICMP_PORT_UNREACHABLE]
    assert errors and marked[Mark.ICMP_ERROR] == errors


def test_a_survey_marks_chosen_packets_as_the_whole_capture(dns_picture_capture) -> None:
    """A filter or --limit leaves packets out; the marks still come from the whole capture."""
    annotated = rows(dns_picture_capture)
    whole = {a.number: a for a in build(annotated).arrows}
    chosen = {n for n in whole if n % 2}  # every other packet
    survey = Survey()
    for r in annotated:
        survey.see(r, selected=r.number in chosen)
    arrows = [survey.arrow(r) for r in annotated if r.number in chosen]
    assert survey.selected == len(chosen) == len(arrows)
    assert [a.marks for a in arrows] == [whole[a.number].marks for a in arrows]
    keys = [ln.key for ln in survey.lifelines]
    assert [(keys[a.src], keys[a.dst]) for a in arrows] == \
        [(build(annotated).lifelines[whole[a.number].src].key,
          build(annotated).lifelines[whole[a.number].dst].key) for a in arrows]
