/* The compiled fast path of `protolab inspect` (see protolab/analysis/fast_inspect.py): reads,
 * decodes, annotates and prints a capture in one loop, the very bytes the Python path prints.
 *
 * run() makes one pass that prints into a spool (fi_spool.c: memory, then an unnamed temporary
 * file); if any packet needs something this code does not reproduce exactly it returns a str
 * saying why, having written nothing. Else it hands the spool to stdout's file descriptor (or
 * to the `write` callable where stdout has none). Where the spool cannot keep the output (no
 * temporary file, disk full) the pass goes on without printing and a second pass prints. The
 * contract with the DNS and QUIC parts is fastinspect.h;
 * the core's files: fi_read.c (pcap, pcapng), fi_decode.c (packets.decode), fi_tcp.c (TCP),
 * fi_out.c (render, table, JSON), fi_flows.c (flow numbers, --flows), fi_row.c (rows). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdarg.h>

#include "fastinspect.h"
#include "fi_core.h"
#include "fi_flows.h"
#include "fi_out.h"
#include "fi_spool.h"
#include "fast_text.h"

#include <errno.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <unistd.h>

#define RING (FI_WINDOW + 1)
#define MAX_TRACKED 50000  /* flows.MAX_TRACKED */

struct Ctx {
    Row ring[RING];
    int head, len;      /* the oldest row's slot, rows in the window */
    char why[256];      /* the first decline's reason ("" while none) */
};

int ctx_window_len(const Ctx *ctx) { return ctx->len; }

Row *ctx_window_at(Ctx *ctx, int i) { return &ctx->ring[(ctx->head + i) % RING]; }

int ctx_decline(Ctx *ctx, const char *fmt, ...) {
    if (ctx->why[0] == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->why, sizeof ctx->why, fmt, ap);
        va_end(ap);
        if (ctx->why[0] == 0)
            snprintf(ctx->why, sizeof ctx->why, "declined");
    }
    return -1;
}

enum { M_TABLE, M_JSON, M_FLOWS, M_FLOWS_JSON };

typedef struct Run {
    /* the arguments */
    const char *path;
    int mode, flows_width;
    int64_t limit;      /* -1: none */
    int dns_ports[64], ndns;
    PyObject *write;    /* where out_fd is -1 */
    int out_fd;         /* stdout's file descriptor, or -1 */
    Spool spool;
    int spooling;       /* 1: what is printed goes to the spool */
    EpMemo memo[DECODE_MEMO];  /* decode's IPv4 endpoint texts */
    Out out;
    /* one pass */
    int printing;
    Ctx *ctx;
    DnsState *dns;
    QuicState *quic;
    TcpState *tcp;
    Flows flows;
    int64_t read, matched, shown;
    double t0;
    Buf buf;
} Run;

/* an interrupted write: a pending signal's handler runs (Ctrl-C raises there); -2 when it
 * raised, 0 to try again */
static int interrupted(void) { return PyErr_CheckSignals() < 0 ? -2 : 0; }

/* a non-blocking stdout: until it takes more, or a signal (the callers look at it next) */
static void wait_for_room(int fd) {
    struct pollfd w = {.fd = fd, .events = POLLOUT};
    poll(&w, 1, -1);
}

/* write(2) all of it to stdout's descriptor: 0, or -2 with OSError set (BrokenPipeError...) */
static int fd_write(int fd, const char *p, size_t n) {
    while (n > 0) {
        if (interrupted() < 0)  /* one that came before: the write might block for good */
            return -2;
        ssize_t k = write(fd, p, n);
        if (k > 0) {  /* short: a signal cut it (a stalled pipe), looked at above */
            p += k;
            n -= (size_t)k;
        } else if (k < 0 && errno == EINTR) {
            continue;  /* its signal is looked at above */
        } else if (k < 0 && errno == EAGAIN) {  /* a non-blocking stdout: wait for room */
            wait_for_room(fd);
        } else {
            PyErr_SetFromErrno(PyExc_OSError);
            return -2;
        }
    }
    return 0;
}

/* n bytes to stdout: its descriptor, or Python's write(bytes) */
static int deliver(Run *run, const char *p, size_t n) {
    if (n == 0)
        return 0;
    if (run->out_fd >= 0)
        return fd_write(run->out_fd, p, n);
    PyObject *chunk = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    if (chunk == NULL)
        return -2;
    PyObject *got = PyObject_CallOneArg(run->write, chunk);
    Py_DECREF(chunk);
    Py_XDECREF(got);
    return got == NULL ? -2 : 0;
}

/* what is in the buffer, to the spool or to stdout; a spool that cannot keep it makes the rest
 * of the pass a pre-scan (nothing formatted) and a second pass print */
static int emit(void *arg, Buf *out) {
    Run *run = arg;
    size_t n = out->len;
    out->len = 0;
    if (!run->spooling)
        return deliver(run, out->p, n);
    if (spool_put(&run->spool, out->p, n) < 0)
        run->printing = 0;
    return 0;
}

/* the spool's file part by sendfile(2) where stdout takes it: 1 sent, 0 not taken, -2 error */
static int send_file_part(Run *run) {
    off_t at = 0;
    while (at < run->spool.file_len) {
        size_t want = (size_t)(run->spool.file_len - at);
        if (interrupted() < 0)  /* as fd_write */
            return -2;
        ssize_t k = sendfile(run->out_fd, run->spool.fd, &at, want < (1u << 30) ? want : 1u << 30);
        if (k > 0 || (k < 0 && errno == EINTR)) {
            continue;  /* short or cut by a signal: it is looked at above */
        } else if (k < 0 && at == 0 && (errno == EINVAL || errno == ENOSYS)) {
            return 0;  /* e.g. an O_APPEND stdout */
        } else if (k < 0 && errno == EAGAIN) {
            wait_for_room(run->out_fd);
        } else if (k <= 0) {
            if (k == 0)
                errno = EIO;  /* the file is shorter than what was written to it */
            PyErr_SetFromErrno(PyExc_OSError);
            return -2;
        }
    }
    return 1;
}

/* the whole spool to stdout, in order */
static int deliver_spool(Run *run) {
    Spool *s = &run->spool;
    int r = deliver(run, s->mem.p, s->mem.len);
    if (r < 0 || s->file_len == 0)
        return r;
    if (run->out_fd >= 0 && (r = send_file_part(run)) != 0)
        return r < 0 ? r : 0;
    char *chunk = malloc(FI_CHUNK);
    if (chunk == NULL) {
        PyErr_NoMemory();
        return -2;
    }
    for (int64_t at = 0; r == 0 && at < s->file_len;) {
        ssize_t k = spool_read(s, at, chunk, FI_CHUNK);
        if (k <= 0) {
            errno = k == 0 ? EIO : errno;
            PyErr_SetFromErrno(PyExc_OSError);
            r = -2;
        } else {
            r = deliver(run, chunk, (size_t)k);
            at += k;
        }
    }
    free(chunk);
    return r;
}

/* annotate_udp._printable and udp_row */
static int udp_row(const Pkt *p, Row *row) {
    size_t n = p->payload_len < 40 ? p->payload_len : 40;
    int printable = n > 0, dq = 0, sq = 0;
    for (size_t i = 0; i < n; i++) {
        printable &= p->payload[i] >= 32 && p->payload[i] < 127;
        sq |= p->payload[i] == '\'';
        dq |= p->payload[i] == '"';
    }
    row->kind = K_UDP_DATAGRAM;
    row->action = A_NONE;
    int r = row_holder(row, H_PACKET);
    if (!printable) {
        row->summary = row_printf(row, "UDP %zu bytes", p->payload_len);
        return r;
    }
    const char *more = p->payload_len > 40 ? "…" : "";
    char *text = row_printf(row, "%.*s%s", (int)n, (const char *)p->payload, more);
    char quote = sq && !dq ? '"' : '\'';  /* repr(str) */
    char shown[2 * 40 + 8];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = (char)p->payload[i];
        if (c == '\\' || c == quote)
            shown[k++] = '\\';
        shown[k++] = c;
    }
    row->summary = row_printf(row, "UDP %zu bytes %c%.*s%s%c", p->payload_len, quote, (int)k,
                              shown, more, quote);
    return r | row_field_str(row, "udp_text", text);
}

/* annotate_udp.IcmpAnnotator._amend_cause: the datagram this error is about, still in the
 * window, becomes a datagram to a closed port; its number, or 0 */
static int64_t amend_cause(Ctx *ctx, const Pkt *p) {
    for (int i = ctx->len - 1; i >= 0; i--) {
        Row *row = ctx_window_at(ctx, i);
        if (strcmp(row->src, p->quoted_origin) != 0 || strcmp(row->dst, p->quoted_target) != 0 ||
            row->ip_proto != FI_PROTO_UDP)
            continue;
        row->kind = strcmp(row->proto, "DNS") == 0 && row->action == A_ENDS
            ? K_DNS_TO_CLOSED_SOCKET : K_UDP_TO_CLOSED_PORT;
        if (row->nrefs >= FI_MAX_REFS)
            return -1;
        memmove(row->refs + 1, row->refs, (size_t)row->nrefs * sizeof *row->refs);
        row->refs[0] = p->number;
        row->nrefs++;
        row->nalso = 0;
        row->nmoves = 0;
        row->action = A_MISSING;
        row->nholders = 0;
        row_holder(row, H_NOBODY);
        if (row_value_str(row, "target", row_strdup(row, p->quoted_target)) < 0)
            return -1;
        return row->number;
    }
    return 0;
}

/* annotate_udp.IcmpAnnotator.row */
static int icmp_row(const Pkt *p, Row *row, Ctx *ctx) {
    int v6 = p->proto != FI_PROTO_ICMP;
    const char *name = v6 ? "ICMPv6" : "ICMP";
    row->proto = name;
    int unreachable = v6 ? p->icmp_type == 1 && p->icmp_code == 4
                         : p->icmp_type == 3 && p->icmp_code == 3;
    if (!p->has_quoted || !unreachable) {
        row->summary = row_printf(row, "%s type %d code %d", name, p->icmp_type, p->icmp_code);
        row->action = A_NONE;
        row->kind = K_ICMP_OTHER;
        return 0;
    }
    int64_t cause = amend_cause(ctx, p);
    if (cause < 0)
        return -1;
    const char *target = row_strdup(row, p->quoted_target);
    row->summary = row_printf(row, "%s port unreachable for %s → %s", name, p->quoted_origin,
                              p->quoted_target);
    row->action = A_MISSING;
    row->kind = K_ICMP_PORT_UNREACHABLE;
    row->key = target;
    int r = row_holder(row, H_NOBODY) | row_value_str(row, "target", target);
    if (cause)
        r |= row_ref(row, cause);
    return r | row_value_str(row, "about", cause ? row_printf(row, " (#%lld)", (long long)cause)
                                                 : "");
}

/* Row.flow where the annotator left none: "proto lower↔higher" (the endpoints' text in order) */
static const char *flow_text(Row *row) {
    const char *lo = row->src, *hi = row->dst;
    if (strcmp(lo, hi) >= 0) {
        lo = row->dst;
        hi = row->src;
    }
    char low[16];  /* str.lower of the ASCII name */
    size_t np = 0;
    for (; row->proto[np] && np < sizeof low - 1; np++)
        low[np] = (char)(row->proto[np] >= 'A' && row->proto[np] <= 'Z' ? row->proto[np] + 32
                                                                       : row->proto[np]);
    low[np] = 0;
    return row_cat(row, low, " ", lo, "↔", hi, NULL);
}

/* annotate.Annotator._annotate (one capture point) and _annotate_protocol */
static int annotate(Run *run, const Pkt *p, Row *row) {
    Ctx *ctx = run->ctx;
    row_begin(row, p);
    row->length = p->length;
    row->orig_len = p->orig_len;
    row->sport = p->sport;
    row->dport = p->dport;
    row->has_tcp = p->has_tcp;
    row->tcp_seq = p->tcp_seq;
    row->tcp_ack = p->tcp_ack;
    row->tcp_flags = p->tcp_flags;
    row->icmp_type = p->icmp_type;
    row->icmp_code = p->icmp_code;
    int r;
    if (p->proto == FI_PROTO_UDP) {
        r = dns_is_dns(run->dns, p, ctx);
        if (r > 0) {
            r = dns_row(run->dns, p, row, ctx);
        } else if (r == 0) {
            r = quic_header(run->quic, p, ctx);
            if (r > 0)
                r = quic_row(run->quic, p, row, ctx);
            else if (r == 0 && udp_row(p, row) < 0)
                r = ctx_decline(ctx, "packet %lld: a UDP row", (long long)p->number);
        }
    } else if (p->has_tcp) {
        r = tcp_row(run->tcp, p, row, ctx);
    } else {
        r = icmp_row(p, row, ctx);
    }
    if (r < 0)
        return ctx_decline(ctx, "packet %lld: declined", (long long)p->number);
    if (run->mode != M_TABLE && (row->flow == NULL || row->flow[0] == 0))
        row->flow = flow_text(row);  /* Row.flow: the table never prints it, the others do */
    return 0;
}

/* inspect.select and run's loop body: a row leaves the window, is numbered and printed */
static int leave(Run *run, Row *row) {
    run->read++;
    int flows = run->mode == M_FLOWS || run->mode == M_FLOWS_JSON;
    if (flows || (run->printing && run->mode == M_JSON)) {
        /* the packet views' numbers cannot decline: counted when printed, and only --json
         * prints them */
        row->flow_number = flows_number_of(&run->flows, row);
        if (row->flow_number < 0 || flows_add(&run->flows, row) < 0)
            return ctx_decline(run->ctx, "packet %lld: a conversation beyond the compiled path",
                               (long long)row->number);
    }
    Out *o = &run->out;
    if (flows)
        return 0;
    run->matched++;
    if (run->limit >= 0 && run->shown >= run->limit)
        return 0;
    run->shown++;
    if (!run->printing)  /* the pre-scan checks the sentence: one it cannot make declines */
        return render(NULL, o, row) < 0
            ? ctx_decline(run->ctx, "packet %lld: a sentence beyond the compiled path",
                          (long long)row->number) : 0;
    if (run->mode == M_TABLE && run->shown == 1)
        format_header(&run->buf, o);
    int r = run->mode == M_JSON ? format_json(&run->buf, o, row) : format_row(&run->buf, o, row);
    if (r < 0)
        return ctx_decline(run->ctx, "packet %lld: could not format", (long long)row->number);
    return run->buf.len >= FI_CHUNK ? emit(run, &run->buf) : 0;
}

static int push(Run *run, const Pkt *p) {
    Ctx *ctx = run->ctx;
    Row *row = &ctx->ring[(ctx->head + ctx->len) % RING];
    if (annotate(run, p, row) < 0)
        return -1;
    ctx->len++;
    while (ctx->len > FI_WINDOW) {
        int r = leave(run, &ctx->ring[ctx->head]);
        ctx->head = (ctx->head + 1) % RING;
        ctx->len--;
        if (r < 0)
            return r;
    }
    return 0;
}

static void pass_free(Run *run) {
    dns_free(run->dns);
    quic_free(run->quic);
    tcp_free(run->tcp);
    flows_free(&run->flows);
    run->dns = NULL;
    run->quic = NULL;
    run->tcp = NULL;
}

static int pass_loop(Run *run, Reader *rd) {
    Rec rec;
    Pkt p;
    int64_t number = 0;
    int r;
    while ((r = reader_next(rd, &rec)) > 0) {
        if ((number & 0xFFFF) == 0xFFFF && PyErr_CheckSignals() < 0)
            return -2;  /* Ctrl-C */
        if (decode(&rec, ++number, &p, run->memo, run->ctx->why, sizeof run->ctx->why) < 0)
            return -1;
        if (number == 1)
            run->t0 = p.time;
        p.rel = p.time - run->t0;
        if ((r = push(run, &p)) < 0)
            return r;
    }
    if (r < 0)
        return ctx_decline(run->ctx, "%s", rd->why);
    while (run->ctx->len > 0) {
        r = leave(run, &run->ctx->ring[run->ctx->head]);
        run->ctx->head = (run->ctx->head + 1) % RING;
        run->ctx->len--;
        if (r < 0)
            return r;
    }
    if (number == 0 && run->mode >= M_FLOWS)
        return ctx_decline(run->ctx, "an empty capture's --flows");
    return 0;
}

/* One pass over the capture: 0 done, -1 declined (ctx->why), -2 Python error (write raised) */
static int pass(Run *run, int printing) {
    Ctx *ctx = run->ctx;
    for (int i = 0; i < RING; i++)
        arena_reset(&ctx->ring[i].arena);
    ctx->head = ctx->len = 0;
    run->printing = printing;
    run->read = run->matched = run->shown = 0;
    int flows = run->mode >= M_FLOWS;
    run->dns = dns_new(run->dns_ports, run->ndns);
    run->quic = quic_new();
    run->tcp = tcp_new(flows ? 0 : MAX_TRACKED);
    flows_init(&run->flows, flows, MAX_TRACKED);
    if (run->dns == NULL || run->quic == NULL || run->tcp == NULL) {
        pass_free(run);
        return ctx_decline(ctx, "no memory");
    }
    Reader rd;
    int r = reader_open(&rd, run->path) < 0 ? ctx_decline(ctx, "%s", rd.why) : 0;
    if (r == 0)
        r = pass_loop(run, &rd);
    reader_close(&rd);
    if (r == 0 && run->printing && flows)
        r = flows_print(&run->flows, run->tcp, run->mode == M_FLOWS_JSON, run->flows_width,
                        &run->buf, emit, run);
    if (r == 0 && run->printing)
        r = emit(run, &run->buf);
    pass_free(run);
    return r;
}

/* ---- arguments ------------------------------------------------------------------------- */

#define FI_NAME(name) #name,
static const char *const KIND_NAMES[] = {FI_KINDS(FI_NAME)};
static const char *const HOLDER_NAMES[] = {FI_HOLDERS(FI_NAME)};
static const char *const ACTION_NAMES[] = {FI_ACTIONS(FI_NAME)};

/* names = ((Kind names), (Kind values)) etc.: values in the C enums' order, or a reason */
static const char *take_names(PyObject *pair, const char *const *c_names, int n,
                              const char **values) {
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2)
        return "names: not (names, values)";
    PyObject *names = PyTuple_GET_ITEM(pair, 0), *vals = PyTuple_GET_ITEM(pair, 1);
    if (!PyTuple_Check(names) || !PyTuple_Check(vals) || PyTuple_GET_SIZE(names) != n ||
        PyTuple_GET_SIZE(vals) != n)
        return "facts.py's enums differ from the compiled ones";
    for (int i = 0; i < n; i++) {
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(names, i));
        values[i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(vals, i));
        if (name == NULL || values[i] == NULL || strcmp(name, c_names[i]) != 0) {
            PyErr_Clear();
            return "facts.py's enums differ from the compiled ones";
        }
    }
    return NULL;
}

static const char *take_templates(Out *o, PyObject *templates) {
    if (!PyDict_Check(templates))
        return "templates: not a dict";
    for (int k = 0; k < K__COUNT; k++) {
        PyObject *t = PyDict_GetItemString(templates, o->kinds[k]);
        const char *text = t ? PyUnicode_AsUTF8(t) : NULL;
        if (text == NULL) {
            PyErr_Clear();
            continue;  /* tmpl not ok: a row of this kind declines */
        }
        tmpl_compile(&o->tmpl[k], text);
    }
    return NULL;
}

static const char *take_layout(Run *run, PyObject *widths, int state_width, int beside) {
    if (!PyTuple_Check(widths) || PyTuple_GET_SIZE(widths) != 5)
        return "widths: not 5 columns";
    for (int i = 0; i < 5; i++) {
        long w = PyLong_AsLong(PyTuple_GET_ITEM(widths, i));
        if (w < 0 || w > 10000) {
            PyErr_Clear();
            return "widths: out of range";
        }
        run->out.widths[i] = (int)w;
    }
    run->out.state_width = state_width;
    run->out.beside = beside;
    return NULL;
}

static const char *take_ports(Run *run, PyObject *ports) {
    PyObject *seq = PySequence_Fast(ports, "dns_ports");
    if (seq == NULL) {
        PyErr_Clear();
        return "dns_ports: not a sequence";
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    const char *why = n > 64 ? "more than 64 DNS ports" : NULL;
    for (Py_ssize_t i = 0; why == NULL && i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v < 0 || v > 65535) {
            PyErr_Clear();
            why = "dns_ports: out of range";
        }
        run->dns_ports[run->ndns++] = (int)v;
    }
    Py_DECREF(seq);
    return why;
}

static const char *take_mode(Run *run, const char *mode) {
    static const char *const modes[] = {"table", "json", "flows", "flows_json"};
    for (int i = 0; i < 4; i++)
        if (strcmp(mode, modes[i]) == 0) {
            run->mode = i;
            return NULL;
        }
    return "an unknown mode";
}

static void run_free(Run *run) {
    for (int k = 0; k < K__COUNT; k++)
        tmpl_free(&run->out.tmpl[k]);
    free(run->out.scratch.p);
    free(run->out.json_names.p);
    free(run->buf.p);
    if (run->ctx)
        for (int i = 0; i < RING; i++)
            arena_free(&run->ctx->ring[i].arena);
    free(run->ctx);
}

static PyObject *result(Run *run, int r, const char *why) {
    PyObject *out;
    if (why != NULL)
        out = PyUnicode_FromString(why);
    else if (r == -2)
        out = NULL;  /* write raised: its exception stands */
    else if (r < 0)
        out = PyUnicode_FromString(run->ctx->why[0] ? run->ctx->why : "declined");
    else
        out = Py_BuildValue("(LLLL)", (long long)run->read, (long long)run->matched,
                            (long long)run->shown, (long long)flows_count(&run->flows));
    run_free(run);
    return out;
}

static PyObject *fast_run(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"path", "mode", "widths", "state_width", "beside", "limit",
                             "dns_ports", "flows_width", "templates", "names", "write", "fd",
                             "spool_dir", "spool_memory", NULL};
    const char *path, *mode, *spool_dir;
    PyObject *widths, *ports, *templates, *names, *write;
    int state_width, beside, flows_width, fd;
    long long limit;
    Py_ssize_t spool_memory;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s$sOipLOiOOOisn", kwlist, &path, &mode,
                                     &widths, &state_width, &beside, &limit, &ports,
                                     &flows_width, &templates, &names, &write, &fd, &spool_dir,
                                     &spool_memory))
        return NULL;
    if (spool_memory < 0)
        spool_memory = 0;
    Run run = {.path = path, .limit = limit, .flows_width = flows_width, .write = write,
               .out_fd = fd};
    run.ctx = calloc(1, sizeof *run.ctx);
    if (run.ctx == NULL)
        return PyErr_NoMemory();
    const char *why = take_mode(&run, mode);
    if (why == NULL && (!PyTuple_Check(names) || PyTuple_GET_SIZE(names) != 3))
        why = "names: not (kinds, holders, actions)";
    if (why == NULL)
        why = take_names(PyTuple_GET_ITEM(names, 0), KIND_NAMES, K__COUNT, run.out.kinds);
    if (why == NULL)
        why = take_names(PyTuple_GET_ITEM(names, 1), HOLDER_NAMES, H__COUNT, run.out.holders);
    if (why == NULL)
        why = take_names(PyTuple_GET_ITEM(names, 2), ACTION_NAMES, A__COUNT, run.out.actions);
    if (why == NULL && out_json_names(&run.out) < 0)
        why = "no memory";
    if (why == NULL)
        why = take_templates(&run.out, templates);
    if (why == NULL)
        why = take_layout(&run, widths, state_width, beside);
    if (why == NULL)
        why = take_ports(&run, ports);
    if (why != NULL)
        return result(&run, 0, why);
    spool_init(&run.spool, spool_memory, spool_dir);
    run.spooling = 1;
    int r = pass(&run, 1);
    run.spooling = 0;
    if (r == 0 && !run.spool.lost)
        r = deliver_spool(&run);
    else if (r == 0)
        r = pass(&run, 1);  /* the spool could not keep the output: print it now */
    spool_free(&run.spool);
    return result(&run, r, NULL);
}

static PyObject *names_tuple(const char *const *names, int n) {
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t != NULL && i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (s == NULL) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

/* names() -> (kinds, holders, actions): the C enums' member names, in their order, for a test
 * to compare with facts.Kind, Holder and Action. */
static PyObject *fast_names(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return Py_BuildValue("(NNN)", names_tuple(KIND_NAMES, K__COUNT),
                         names_tuple(HOLDER_NAMES, H__COUNT), names_tuple(ACTION_NAMES, A__COUNT));
}

static PyMethodDef methods[] = {
    {"run", (PyCFunction)(void (*)(void))fast_run, METH_VARARGS | METH_KEYWORDS,
     "run(path, *, mode, widths, state_width, beside, limit, dns_ports, flows_width, templates, "
     "names, write, fd, spool_dir, spool_memory) -> (read, matched, shown, flows), or a str "
     "saying why it declines (nothing written then)"},
    {"names", fast_names, METH_NOARGS, "names() -> (kinds, holders, actions) in the C enums' order"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastinspect", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastinspect(void) { return PyModule_Create(&module); }
