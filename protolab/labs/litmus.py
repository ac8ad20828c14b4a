"""The litmus test, measured: restart things mid-workflow and see whose workflow goes on.

Where state lives decides every verdict: a session in a backend's memory dies with that process (or
is simply elsewhere when the balancer sends you to another backend); a session in a shared store
survives any backend restart and dies with the store; a signed token survives everything that does
not hold it, and the cart beside it lives in the store. Each verdict here comes from a real
workflow against real processes and is read from the last response; each disruption is an
observation with its evidence: a restart counts only when another process ID answers on the
backend's port, a wipe only when the store's own count of the lab's keys falls to 0, a switch only
when another backend (by its `X-Backend` header) served view cart. What was not performed is NOT
OBSERVED and gets no verdict; a workflow that broke before its disruption says where.

The cluster and its client are `protolab.labs.cluster`; `protolab litmus` (`run_litmus`) follows
the table with the measured trade-offs (`protolab.labs.tradeoffs`) and, with `--under-load`, a
rolling restart (`protolab.labs.rolling_restart`).
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass, field
from enum import Enum

from protolab.analysis.observe import Evidence, Observation, Status, explain, observe
from protolab.labs.cluster import (
    LOGIN,
    Client,
    Cluster,
    Step,
    Variant,
    ask,
    direct,
    own_keys_removed,
    probe,
    slug,
    store_keys,
    variants,
)
from protolab.labs.output import Out
from protolab.labs.rolling_restart import run_under_load
from protolab.labs.tradeoffs import run_tradeoffs
from protolab.net.lb import Policy
from protolab.net.stores import open_store

#: the verdicts, read from the view cart response
CONTINUED, LOGGED_OUT, CART_LOST = "workflow continued", "logged out", "cart lost"


# -- the litmus table -----------------------------------------------------------------------------
#
# Each cell is one workflow, login → add item → DISRUPTION → view cart, kept as data: every request
# with what its response said (the backend's own X-Backend and X-Backend-Pid headers), the
# disruption as an `Observation` with its evidence (PIDs answering on each restarted backend's port
# before → after; the store's own key count before → after a wipe; the backend that served add
# item → the one that served view cart), and the verdict as an `Observation` read from the view
# cart response. A workflow that broke before the disruption is reported as such, never as a
# verdict for a disruption that did not happen.


class Disruption(Enum):
    """What happens between add item and view cart: a column of the table."""

    SWITCH = "switch backend"  #: view cart served by another backend than add item
    RESTART_SERVING = "restart serving backend"  #: the backend that served add item, killed
    RESTART_ALL = "restart all backends"  #: every backend process killed and started again
    WIPE = "wipe the store"  #: the shared store emptied of the lab app's keys


#: the table's columns, in order
DISRUPTIONS = tuple(d.value for d in Disruption)


@dataclass
class Cell:
    """One cell of the litmus table: a workflow, the disruption performed, what came of it."""

    variant: str
    policy: str
    disruption: str
    steps: list[Step] = field(default_factory=list)  #: every request, in order
    done: Observation | None = None  #: the disruption performed, with its evidence
    outcome: Observation | None = None  #: the verdict from the response, or where it broke
    verdict: str = ""  #: CONTINUED, LOGGED_OUT, CART_LOST; "": no verdict for the disruption
    broke_at: str = ""  #: the step the workflow broke at, before the disruption
    restarts: list[tuple[str, int, int]] = field(default_factory=list)  #: (id, pid before, after)

    @property
    def key(self) -> str:
        return "litmus." + ".".join(slug(x) for x in (self.variant, self.policy, self.disruption))

    @property
    def served(self) -> list[str]:
        """The backend that answered each request, in order (from the responses)."""
        return [s.backend for s in self.steps if s.status]

    def observations(self) -> list[Observation]:
        return [o for o in (self.done, self.outcome) if o is not None]

    def problem(self) -> str:
        return "; ".join(f"{o.key}: {o.why}" for o in self.observations() if o.failed)

    def text(self) -> str:
        """The cell as printed: the verdict (or where it broke, or NOT OBSERVED), what this run
        did with its evidence, and the response the verdict is read from."""
        done, outcome = self.done, self.outcome
        if self.broke_at and outcome is not None and outcome.observed:
            return (f"broke at {self.broke_at}; {self.disruption}: not tried\n"
                    f"saw: {outcome.evidence_text()}")
        if done is not None and done.status in (Status.NOT_TRIED, Status.LIVE_ONLY) \
                and not self.broke_at:
            return f"- ({done.status.value}: {done.why})"
        lines = []
        if done is not None and done.failed:
            lines.append(f"NOT OBSERVED: {done.claim} — {done.why}")
        elif outcome is not None and outcome.failed:
            lines.append(f"NOT OBSERVED: {outcome.claim} — {outcome.why}")
        elif outcome is not None:
            lines.append(outcome.seen)
        if done is not None and done.status in (Status.OBSERVED, Status.NOT_OBSERVED):
            ev = done.evidence_text()
            lines.append(f"did: {done.done}" + (f" [{ev}]" if ev else ""))
        if outcome is not None and outcome.evidence:
            lines.append(f"saw: {outcome.evidence_text()}")
        return "\n".join(lines)


def _other_backend(cluster: Cluster, backend_id: str) -> str:
    """The backend after `backend_id` in the cluster (itself when it is the only one)."""
    ids = list(cluster.procs)
    return ids[(ids.index(backend_id) + 1) % len(ids)] if backend_id in ids else ids[0]


def _switch(cluster: Cluster, c: Client, added: Step, key: str) -> tuple[Observation, list[Step]]:
    """View cart through the balancer; if it answers from the backend that served add item
    (a sticky policy), send it straight to another backend, as the balancer would once it took
    that backend out (drained, failed, scaled in)."""
    steps = [ask(c, "view cart", "GET", "/cart")]
    done = "view cart through the balancer"
    if steps[-1].status and steps[-1].backend == added.backend:
        other = _other_backend(cluster, added.backend)
        steps.append(ask(direct(cluster, other, c), "view cart", "GET", "/cart", via=other))
        done = f"the balancer kept {added.backend}: view cart sent straight to {other}"
    last = steps[-1]
    switched = bool(last.status) and last.backend not in (added.backend, "?")
    why = (f"view cart got no response ({last.error})" if not last.status else
           f"view cart was served by {last.backend}, the backend that served add item")
    return observe(f"{key}.done", "switch backend", switched, done=done,
                   seen="another backend served view cart",
                   evidence=[Evidence("served by", f"{added.backend} (add item)",
                                      f"{last.backend} (view cart)")],
                   why_not=why), steps


def _restart(cluster: Cluster, ids: list[str], key: str
             ) -> tuple[Observation, list[tuple[str, int, int]]]:
    """Kill each backend and start a new one on its port; the PIDs are what the process
    answering on that port says, before and after (they must differ)."""
    before = {b: probe(cluster, b) for b in ids}
    for b in ids:
        cluster.restart(b)
    after = {b: probe(cluster, b) for b in ids}
    restarts = [(b, before[b].pid, after[b].pid) for b in ids]
    same = [f"{b} pid {old} → {new}" for b, old, new in restarts if not (old and new)
            or old == new]
    why = "; ".join(same) + ": the same process (or none) answered before and after"
    return observe(f"{key}.done", f"restart {', '.join(ids)}", not same,
                   done=f"killed and restarted {', '.join(ids)}",
                   seen="a new process answers on each restarted backend's port",
                   evidence=[Evidence(f"{b} pid", old, new) for b, old, new in restarts],
                   why_not=why), restarts


def _wipe(url: str, key: str) -> Observation:
    before = store_keys(url)
    open_store(url).wipe()
    after = store_keys(url)
    why = (f"the store held no keys to wipe ({before})" if not before else
           f"{after} of {before} keys are still there")
    return observe(f"{key}.done", "wipe the store", before > 0 and after == 0,
                   done=f"wiped the store ({url.split(':', 1)[0]})",
                   seen="the store's keys are gone",
                   evidence=[Evidence("store keys", before, after)], why_not=why)


def _verdict(view: Step, item: str, key: str, done: Observation) -> tuple[str, Observation]:
    """The verdict, from the view cart response, for a disruption that was performed."""
    claim = f"what {done.claim} did to the workflow"
    if not done.observed:
        return "", observe(f"{key}.outcome", claim, False, evidence=[view.evidence()],
                           why_not=f"no verdict: {done.claim} was not performed")
    if not view.status:
        return "", observe(f"{key}.outcome", claim, False, why_not=view.text())
    if view.status == 401:
        verdict = LOGGED_OUT
    elif view.status == 200:
        verdict = CONTINUED if item in view.items else CART_LOST
    else:
        verdict = f"HTTP {view.status}"
    cart = (f"cart holds {item}" if item in view.items else
            f"cart has no {item}" if view.status == 200 else "")
    evidence = [view.evidence()] + ([Evidence(cart)] if cart else [])
    return verdict, observe(f"{key}.outcome", claim, True, seen=verdict, evidence=evidence)


def _broke(cell: Cell, step: Step) -> Cell:
    """The workflow broke before the disruption: say where, from the response; no verdict."""
    cell.broke_at = step.name
    said = step.error or (f"HTTP {step.status}" if step.status else "no response")
    cell.outcome = observe(
        f"{cell.key}.outcome", "the workflow up to the disruption", step.name != "login",
        seen=f"broke at {step.name}: {said}",
        evidence=[s.evidence() for s in cell.steps],
        why_not=f"the workflow could not start: {step.text()}")
    cell.done = explain(f"{cell.key}.done", cell.disruption,
                        f"the workflow broke at {step.name}, before it")
    return cell


def run_workflow(cluster: Cluster, disruption: str, source_ip: str = "127.0.0.2",
                 policy: str = "") -> Cell:
    """login → add item → DISRUPTION → view cart, through the balancer."""
    cell = Cell(cluster.variant.name, policy, disruption)
    c = Client(cluster.address, source_ip)
    item = f"book-{secrets.token_hex(3)}"
    cell.steps.append(ask(c, "login", "POST", "/login", LOGIN))
    if cell.steps[-1].status == 200:
        cell.steps.append(ask(c, "add item", "POST", "/cart/items", {"item": item}))
    if cell.steps[-1].status != 200:
        return _broke(cell, cell.steps[-1])
    added = cell.steps[-1]
    if disruption == Disruption.SWITCH.value:
        cell.done, views = _switch(cluster, c, added, cell.key)
        cell.steps += views
    else:
        if disruption == Disruption.WIPE.value:
            if cluster.variant.store is None:
                return _not_applicable(cell)
            cell.done = _wipe(cluster.variant.store, cell.key)
        else:
            ids = [added.backend] if disruption == Disruption.RESTART_SERVING.value \
                else list(cluster.procs)
            cell.done, cell.restarts = _restart(cluster, ids, cell.key)
        cell.steps.append(ask(c, "view cart", "GET", "/cart"))
    cell.verdict, cell.outcome = _verdict(cell.steps[-1], item, cell.key, cell.done)
    return cell


def _not_applicable(cell: Cell) -> Cell:
    cell.done = explain(f"{cell.key}.done", cell.disruption,
                        f"the {cell.variant} design has no store")
    return cell


def litmus_table(variants: list[Variant], policies: list[Policy], lb: str = "protolab",
                 out: Out = print) -> list[Cell]:
    """Every variant × policy × disruption; one cluster per variant and policy, a fresh login
    for each workflow."""
    cells = []
    for variant in variants:
        for policy in policies:
            with Cluster(variant, policy, lb=lb) as cluster:
                for disruption in DISRUPTIONS:
                    if disruption == Disruption.WIPE.value and variant.store is None:
                        cell = _not_applicable(Cell(variant.name, policy.value, disruption))
                    else:
                        cell = run_workflow(cluster, disruption, policy=policy.value)
                    cells.append(cell)
    print_litmus(cells, out)
    return cells


def print_litmus(cells: list[Cell], out: Out) -> None:
    """One table per design: a row per policy, a column per disruption; each cell its verdict,
    what this run did (did:) with its evidence, and the response it is read from (saw:)."""
    from tabulate import tabulate

    by_variant: dict[str, dict[str, dict[str, Cell]]] = {}
    for cell in cells:
        by_variant.setdefault(cell.variant, {}).setdefault(cell.policy, {})[cell.disruption] = cell
    for variant, rows in by_variant.items():
        out(f"design: {variant}")
        out(tabulate([(policy, *(row[d].text() if d in row else "" for d in DISRUPTIONS))
                      for policy, row in rows.items()],
                     headers=("policy", *DISRUPTIONS), tablefmt="grid",
                     maxcolwidths=[13, 22, 22, 22, 22], maxheadercolwidths=[13, 22, 22, 22, 22]))
    failed = [o for cell in cells for o in cell.observations() if o.failed]
    for o in failed:
        out(o.line())


# -- the litmus command: the table, the trade-offs, the rolling restart ----------------------------


def run_litmus(names: list[str], policies: list[str], lb: str, redis: str, measured: bool = True,
               under_load: bool = False, requests: int = 10_000, capture: bool = True,
               pcap: str | None = None, out: Out = print) -> bool:
    """`protolab litmus`: the table for every design × policy, the measured trade-offs, and a
    rolling restart under load. True when something failed."""
    with tempfile.TemporaryDirectory(prefix="protolab-litmus-") as tmp, \
            own_keys_removed(variants(names, redis, tmp)) as chosen:
        out(f"The litmus test: login → add item → DISRUPTION → view cart, through the "
            f"{lb} balancer,\nreal processes (3 backends per design). Each cell: the "
            f"verdict; what this run did (did:) with its\nevidence; the responses it is read "
            f"from (saw:), each naming the backend and PID that answered.\nA restart counts "
            f"only if another PID answers on that port. Switch backend: if the balancer keeps\n"
            f"view cart on the same backend, it is sent straight to another one.\n")
        cells = litmus_table(chosen, [Policy(p) for p in policies], lb=lb, out=out)
        failed = any(cell.problem() for cell in cells)
        if measured:
            failed = run_tradeoffs(chosen, out) or failed
        if under_load:
            failed = run_under_load(chosen, requests, capture, pcap, out) or failed
    return failed
