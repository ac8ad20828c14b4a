"""protolab.analysis.story_checks: each demo's story is found in its own capture and in no other."""

from __future__ import annotations

import itertools

import pytest

from protolab.analysis.annotate import annotate_file
from protolab.analysis.story_checks import STORIES, check, missing
from protolab.wire.paths import reference_file
from protolab.wire.pcap import read_pcap, write_pcap

DEMOS = list(STORIES)


def reference(demo: str):
    return reference_file(demo)


@pytest.mark.parametrize("demo", DEMOS)
def test_every_reference_capture_tells_its_whole_story(demo) -> None:
    rows = list(annotate_file(reference(demo)))
    assert missing(demo, rows) == []
    for finding in check(demo, rows):
        assert all(1 <= n <= len(rows) for n in finding.packets), finding


@pytest.mark.parametrize(("demo", "other"), list(itertools.permutations(DEMOS, 2)))
def test_another_demos_capture_does_not_tell_this_story(demo, other) -> None:
    rows = list(annotate_file(reference(other)))
    assert missing(demo, rows), f"{other}'s capture passed for {demo}"


@pytest.mark.parametrize("demo", DEMOS)
def test_a_capture_cut_short_misses_the_last_steps(demo, tmp_path) -> None:
    records = list(read_pcap(reference(demo)))
    last = max(max(f.packets) for f in check(demo, list(annotate_file(reference(demo)))))
    cut = tmp_path / "cut.pcap"
    write_pcap(cut, records[:last - 1])
    gone = missing(demo, list(annotate_file(cut)))
    assert gone, "a capture without the last step's last packet still passed"


def test_nothing_at_all_shows_nothing() -> None:
    for demo in DEMOS:
        assert len(missing(demo, [])) == len(STORIES[demo])
