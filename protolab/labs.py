"""The numbered lab worksheets, and grading a learner's answers against *their* capture.

Where state lives: in the learner's capture. Every graded fact is computed from the packets of the
capture being graded (through protolab.annotate, the same reading `inspect` gives), never from fixed
values, so each run has its own right answers and a copied answer file does not pass.

Answers file (TOML), one key per question, e.g. `q1 = "0x1a2b"`; `protolab check NN --template`
writes an empty one.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protolab.annotate import Action, Row, annotate_file
from protolab.paths import SOURCE_ROOT, default_capture_path, reference_capture, reference_file

LABS_DIR = SOURCE_ROOT / "labs"


class CheckError(Exception):
    """A problem with the answers file or capture: one line for the user."""


@dataclass(frozen=True)
class Question:
    key: str
    text: str
    fact: Callable[[list[Row]], str]  #: the right answer, computed from the capture's rows
    hint: str
    kind: str = "text"  #: text, hex, int, yesno: how answers are compared


@dataclass(frozen=True)
class Lab:
    number: str
    slug: str
    title: str
    demo: str  #: the subcommand that makes its capture
    questions: tuple[Question, ...]

    @property
    def worksheet(self) -> Path:
        return LABS_DIR / f"{self.number}-{self.slug}.md"

    @property
    def capture(self) -> Path:
        return default_capture_path(self.demo)


# -- facts ----------------------------------------------------------------------------------------


def _dns(rows: list[Row]) -> list[Row]:
    return [r for r in rows if "dns_id" in r.fields]


def _first_client_port(rows: list[Row]) -> int:
    return next(r.fields["sport"] for r in _dns(rows) if not r.fields.get("dns_response"))


def _dns_server(rows: list[Row]) -> str:
    return next(r.dst for r in _dns(rows) if not r.fields.get("dns_response"))


def dns_first_answer_id(rows: list[Row]) -> str:
    return f"{next(r.fields['dns_id'] for r in _dns(rows) if r.action is Action.ENDS):#06x}"


def dns_queries_on_first_socket(rows: list[Row]) -> str:
    port = _first_client_port(rows)
    return str(sum(1 for r in _dns(rows) if not r.fields.get("dns_response")
                   and r.fields["sport"] == port))


def dns_answers_in_order(rows: list[Row]) -> str:
    port = _first_client_port(rows)
    asked = [r.fields["dns_id"] for r in _dns(rows)
             if not r.fields.get("dns_response") and r.fields["sport"] == port]
    answered = [r.fields["dns_id"] for r in _dns(rows)
                if r.fields.get("dns_response") and r.fields["dport"] == port]
    return "yes" if asked == answered else "no"


def dns_forged_id(rows: list[Row]) -> str:
    server = _dns_server(rows)
    forged = next(r for r in _dns(rows) if r.action is Action.MISSING and r.src == server
                  and "no pending query" in r.state)
    return f"{forged.fields['dns_id']:#06x}"


def dns_icmp_packet(rows: list[Row]) -> str:
    return str(next(r.number for r in rows if r.proto == "ICMP"))


def tcp_close_wait_packet(rows: list[Row]) -> str:
    return str(next(r.number for r in rows if "ESTABLISHED→CLOSE_WAIT" in r.state))


def tcp_first_closer(rows: list[Row]) -> str:
    fin = next(r for r in rows if "ESTABLISHED→FIN_WAIT_1" in r.state)
    return "client" if "client ESTABLISHED→FIN_WAIT_1" in fin.state else "server"


def tcp_handshake_packets(rows: list[Row]) -> str:
    first = rows[0].flow
    return str(sum(1 for r in rows[:3] if r.flow == first))


def tcp_forged_reply(rows: list[Row]) -> str:
    forged = next(r for r in rows if "far outside" in r.state)
    reply = next(r for r in rows if r.number > forged.number and r.src == forged.dst
                 and r.dst == forged.src)
    return "ACK" if reply.summary.startswith("[ACK]") else reply.summary.split("]")[0][1:]


def tcp_rst_port(rows: list[Row]) -> str:
    rst = next(r for r in rows if r.summary.startswith("[RST") and r.dst.endswith(":40404"))
    return rst.src.rsplit(":", 1)[1]


def udp_icmp_count(rows: list[Row]) -> str:
    return str(sum(1 for r in rows if r.proto == "ICMP"))


def udp_total_after_restart(rows: list[Row]) -> str:
    replies = [r for r in rows if r.proto == "UDP" and "total=" in r.summary
               and "seen=" in r.summary]
    return replies[-1].summary.split("total=", 1)[1].split()[0]


def udp_client_ports(rows: list[Row]) -> str:
    server = rows[0].dst
    return str(len({r.src for r in rows if r.proto == "UDP" and r.dst == server}))


def quic_migrated_address(rows: list[Row]) -> str:
    moved = next(r for r in rows if "migration" in r.state)
    return moved.src.rsplit(":", 1)[0]


def quic_rotated_dcid(rows: list[Row]) -> str:
    rotated = next(r for r in rows if "rotation" in r.state)
    return rotated.fields["quic_dcid"]


def quic_retry_packet(rows: list[Row]) -> str:
    return str(next(r.number for r in rows if r.fields.get("quic_type") == "Retry"))


def _http_requests(rows: list[Row]) -> list[Row]:
    return [r for r in rows if "http" in r.fields and not r.fields["http"].startswith("HTTP/")]


def lb_backends_that_served(rows: list[Row]) -> str:
    """Distinct backends that answered: responses leaving a backend port, not the balancer's."""
    balancer = _http_requests(rows)[0].dst
    return str(len({r.src for r in rows if r.fields.get("http", "").startswith("HTTP/")
                    and r.src != balancer}))


def lb_first_looked_up(rows: list[Row]) -> str:
    first = next(r for r in _http_requests(rows) if "LOOKED UP" in r.state)
    return first.fields["http"]


def lb_sessions_created(rows: list[Row]) -> str:
    balancer = _http_requests(rows)[0].dst
    return str(sum(1 for r in rows if "creates a session" in r.state and r.src != balancer))


# -- the catalogue --------------------------------------------------------------------------------

LABS: tuple[Lab, ...] = (
    Lab("01", "tcp-connection-state", "TCP connection state lives in two kernels", "tcp-demo", (
        Question("q1", "How many packets does the first connection's handshake take?",
                 tcp_handshake_packets, "count SYN, SYN-ACK and ACK at the top of the table",
                 "int"),
        Question("q2", "Which packet number made the server's socket enter CLOSE_WAIT?",
                 tcp_close_wait_packet, "look for ESTABLISHED→CLOSE_WAIT in the state column",
                 "int"),
        Question("q3", "Which side closed first, client or server?", tcp_first_closer,
                 "who sent the first FIN? that side goes to FIN_WAIT_1"),
        Question("q4", "What did the server's kernel send back to the forged out-of-window "
                       "segment (its TCP flags)?", tcp_forged_reply,
                 "find the row that says 'far outside'; look at the next packet back"),
        Question("q5", "From which port did the RST to port 40404 come?", tcp_rst_port,
                 "filter: --filter 'port 40404'", "int"),
    )),
    Lab("02", "udp-litmus", "UDP keeps nothing: the litmus test", "udp-demo", (
        Question("q1", "How many ICMP port unreachable messages are in your capture?",
                 udp_icmp_count, "--filter icmp", "int"),
        Question("q2", "What total did the server answer to the last request of the "
                       "workflow (after its restart)?", udp_total_after_restart,
                 "the last reply with total= in the summary column", "int"),
        Question("q3", "From how many different client sockets (address:port) did datagrams "
                       "reach the server's port? (Yet the server's kernel table held one "
                       "entry: no per-peer state.)", udp_client_ports,
                 "--filter 'udp and port SERVERPORT', count distinct sources", "int"),
    )),
    Lab("03", "dns-query-ids", "DNS query IDs: the client holds the state", "dns-demo", (
        Question("q1", "What was the query ID of the answer that arrived first?",
                 dns_first_answer_id, "the first row whose action is 'ends'", "hex"),
        Question("q2", "How many queries did the client send over its first socket?",
                 dns_queries_on_first_socket, "count queries from the first client port",
                 "int"),
        Question("q3", "Predict, then check: did the answers come back in the order the "
                       "queries were sent (yes/no)?", dns_answers_in_order,
                 "compare the order of IDs in queries and in answers", "yesno"),
        Question("q4", "What ID did the forged answer from the server's own port carry?",
                 dns_forged_id, "the answer row that says 'no pending query has id'", "hex"),
        Question("q5", "Which packet number is the ICMP port unreachable?", dns_icmp_packet,
                 "--filter icmp", "int"),
    )),
    Lab("04", "quic-connection-ids", "QUIC connection IDs: state keyed by CID, not address",
        "quic-demo", (
            Question("q1", "From which IP address did the client send after it migrated?",
                     quic_migrated_address, "the row whose state says 'migration'"),
            Question("q2", "Which DCID did the client switch to when it rotated (hex)?",
                     quic_rotated_dcid, "the row whose state says 'rotation'", "hex"),
            Question("q3", "Which packet number is the Retry?", quic_retry_packet,
                     "--filter quic, look for Retry in the summary", "int"),
        )),
    Lab("05", "backends-sessions-jwt-lb", "Stateful and stateless backends behind a balancer",
        "lb", (
            Question("q1", "How many different backends answered your workflow's requests?",
                     lb_backends_that_served,
                     "count the distinct sources of HTTP/1.1 responses that are not the "
                     "balancer", "int"),
            Question("q2", "Which request line is the first whose state was LOOKED UP by the "
                           "session cookie it carried?", lb_first_looked_up,
                     "the first request row whose state says 'LOOKED UP'"),
            Question("q3", "How many responses from a backend created a session (sent the "
                           "sessionId cookie)?", lb_sessions_created,
                     "rows that say 'creates a session' coming from a backend port", "int"),
        )),
)


def find(number: str) -> Lab:
    for lab in LABS:
        if lab.number == number.zfill(2):
            return lab
    raise CheckError(f"no lab {number}: the labs are " + ", ".join(lab.number for lab in LABS))


# -- grading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    question: Question
    given: str
    right: bool
    expected: str


def _normal(value: object, kind: str) -> str:
    text = str(value).strip().lower()
    if kind == "hex":
        try:
            return f"{int(text, 16):x}"
        except ValueError:
            return text
    if kind == "int":
        try:
            return str(int(text, 0))
        except ValueError:
            return text
    if kind == "yesno":
        return {"y": "yes", "n": "no"}.get(text, text)
    return text


def facts(lab: Lab, capture: Path) -> dict[str, str]:
    """The right answers for this capture."""
    from protolab.pcap import PcapError

    try:
        rows = list(annotate_file(capture))
    except PcapError as exc:
        raise CheckError(str(exc)) from None
    out = {}
    for q in lab.questions:
        try:
            out[q.key] = q.fact(rows)
        except (StopIteration, IndexError, KeyError):
            raise CheckError(f"{capture} is not a capture of `protolab {lab.demo}` (question "
                             f"{q.key} cannot be answered from it)") from None
    return out


def grade(lab: Lab, answers_file: Path, capture: Path) -> list[Mark]:
    try:
        answers = tomllib.loads(answers_file.read_text())
    except OSError as exc:
        raise CheckError(f"cannot read {answers_file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CheckError(f"{answers_file} is not valid TOML: {exc}") from None
    right = facts(lab, capture)
    marks = []
    for q in lab.questions:
        given = str(answers.get(q.key, "")).strip()
        ok = bool(given) and _normal(given, q.kind) == _normal(right[q.key], q.kind)
        marks.append(Mark(q, given, ok, right[q.key]))
    return marks


def template(lab: Lab) -> str:
    lines = [f"# Answers for lab {lab.number}: {lab.title}",
             f"# Fill in each value from your own run, then: protolab check {lab.number} "
             f"--answers THIS_FILE", ""]
    for q in lab.questions:
        lines += [f"# {q.key}: {q.text}", f'{q.key} = ""', ""]
    return "\n".join(lines)


def status() -> list[tuple[str, str, str, str]]:
    """(number, title, worksheet, capture) with what exists here."""
    rows = []
    for lab in LABS:
        sheet = lab.worksheet.relative_to(SOURCE_ROOT) if lab.worksheet.exists() else "missing"
        live = lab.capture.exists()
        ref = reference_capture(lab.demo)
        capture = (f"{lab.capture} (your run)" if live else
                   f"no run yet; reference {ref}" if reference_file(lab.demo).exists()
                   else "no run yet")
        rows.append((lab.number, lab.title, str(sheet), capture))
    return rows
