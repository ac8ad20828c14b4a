"""The compiled fast path's enums (fastinspect.h: Kind, Holder, Action) are facts.py's, in its
order: run() is handed the values, and names() says the C members' order."""

import pytest

from protolab.analysis.facts import Action, Holder, Kind
from protolab.analysis.fast_inspect import extension


def test_c_enums_follow_facts() -> None:
    ext = extension()
    if ext is None:
        pytest.skip("the compiled extension is not built")
    kinds, holders, actions = ext.names()
    assert kinds == tuple(k.name for k in Kind)
    assert holders == tuple(h.name for h in Holder)
    assert actions == tuple(a.name for a in Action)
