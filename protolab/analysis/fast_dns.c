/* DNS over UDP for the compiled fast path: annotate_dns.DnsAnnotator (see fastinspect.h), the
 * pending-query table a DNS client must hold, rebuilt from the packets (RFC 1035: an answer is
 * matched by source, id and question), with retransmissions, a middlebox's relay legs, a
 * resolver's upstream queries and cache, forged floods, and answers that find nothing pending.
 *
 * Messages are read by wire/dns_wire.read_simple's rules (RFC 1035 section 4.1); any message it
 * leaves to dnspython is DECLINED (the Python path prints the capture), so what a message is said
 * to be never depends on which path read it. The type and rcode names are dnspython's own
 * (dns.rdatatype.to_text, dns.rcode.to_text): fast_dns_names.h, written from it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fi_buf.h"
#include "fi_map.h"
#include "fast_text.h"
#include "fastinspect.h"

#define RECENT_MAX FI_WINDOW  /* annotate_dns._recent: recent payloads, WINDOW of them */
#define ASKED_LOOK 64         /* _asked_by_clients looks at the 64 newest pending queries */
#define TYPE_A 1
#define TYPE_CNAME 5
#define CLASS_IN 1
#define KEY_MAX (2 * FI_ENDPOINT + 4)

/* ---- the state: DnsAnnotator's tables ------------------------------------------------------- */

typedef struct Query {          /* annotate_dns._Query; key: client, server, id */
    int64_t number;
    double time;
    char *question;             /* `text` when it fits, else malloc'd */
    int64_t copies;
    int leg;
    int64_t upstream;
    char text[64];
} Query;

typedef struct Taken {          /* _taken: a leg socket's last matched answer */
    int64_t number;
    char *content;              /* question "\0" answers, malloc'd */
    size_t content_len;
} Taken;

typedef struct PathSeen {       /* one path that carried a payload, and its last packet */
    char path[KEY_MAX];         /* src "\0" dst */
    size_t len;
    int64_t number;
} PathSeen;

typedef struct Recent {         /* _recent: payload -> {path: number} */
    uint64_t hash;
    uint8_t *payload;
    size_t len, room;           /* room: the payload buffer's size */
    PathSeen *paths;
    int npaths, cap;
} Recent;

typedef struct Record {         /* one record of the answer or authority section, as read */
    const uint8_t *owner;       /* its name written out in labels (in the payload, or own) */
    size_t owner_len;
    const uint8_t *rdata;
    unsigned rtype, rclass, rdlen;
    uint32_t ttl;
    int group;                  /* its RRset: the first record with the same owner, class, type */
    uint8_t own[256];           /* a compressed owner, written out (read_more) */
    uint8_t target[256];        /* a CNAME's target, written out (read_more) */
} Record;

typedef struct Msg {            /* parse_dns's facts, read by read_simple's rules */
    unsigned qid, rcode, qtype, qclass;
    int response;
    const uint8_t *qname;
    size_t qname_len;
    int nrecords;               /* in st->records: the answers, then the authority records */
    int nanswers;
} Msg;

struct DnsState {
    int ports[64];
    int nports;
    int names_ok;               /* the names below came from dnspython */
    int ip_generic;             /* dnspython would read A/AAAA in IN as generic (ip_generic) */
    char *type_low[256];        /* dns.rdatatype.to_text for the types under 256 it names */
    int high_n;
    unsigned high_value[64];    /* ... and for the others it names */
    char *high_name[64];
    char *rcode[16];            /* dns.rcode.to_text(0..15) */
    Map resolvers;              /* set: endpoints seen asking upstream for their clients */
    Map leg_sockets;            /* set: the resolvers' upstream-side sockets */
    Map taken;                  /* leg socket -> Taken */
    Map flood;                  /* leg socket "\0" content -> int64 count */
    Map pending;                /* client, server, id -> Query (OrderedDict, bounded) */
    Map answered;               /* client, server, id -> int64 number (bounded) */
    Map relay_paths;            /* src "\0" dst -> nothing (bounded) */
    Map legs;                   /* src, dst, id -> int64 number (bounded) */
    Recent *recent[RECENT_MAX + 1];
    uint64_t recent_hash[RECENT_MAX + 1];  /* their hashes, in the same order */
    int nrecent;
    Recent *spare;              /* the last one forgotten, for the next payload */
    Record *records;            /* scratch: the answers of the message being read */
    int records_cap;
    Buf question, answers, scratch;
    Buf last_qname;             /* the wire name whose text `question` holds (with last_qtype) */
    unsigned last_qtype;
};

static void query_drop(void *v) {
    Query *q = v;
    if (q->question != q->text)
        free(q->question);
}
static void taken_drop(void *v) { free(((Taken *)v)->content); }

/* ---- small helpers ---------------------------------------------------------------------------- */

/* client, server and id as one key (the Python tuple (client, server, id)). */
static size_t key3(char *out, const char *a, size_t na, const char *b, size_t nb,
                   unsigned qid) {
    memcpy(out, a, na + 1);
    memcpy(out + na + 1, b, nb + 1);
    out[na + nb + 2] = (char)(qid >> 8);
    out[na + nb + 3] = (char)(qid & 0xFF);
    return na + nb + 4;
}

static size_t key2(char *out, const char *a, size_t na, const char *b, size_t nb) {
    memcpy(out, a, na + 1);
    memcpy(out + na + 1, b, nb);
    return na + nb + 1;
}

static int set_add(Map *m, const char *s) {
    return map_put(m, s, strlen(s), NULL) == NULL ? -1 : 0;
}

/* str.rpartition(":")[0]'s length: up to the last ':', or 0 when there is none. */
static size_t host_len(const char *endpoint) {
    const char *c = strrchr(endpoint, ':');
    return c ? (size_t)(c - endpoint) : 0;
}

/* ---- dnspython's names ------------------------------------------------------------------------ */

#include "fast_dns_names.h"

/* A type's name where type_text finds it: below 256 by value, else in the (at most 64) others;
 * 0 when there is no room (then DNS rows decline). `name` is the state's from now on. */
static int put_type(DnsState *st, long v, char *name) {
    if (name == NULL || v < 0 || v > 0xFFFF || (v >= 256 && st->high_n >= 64)) {
        free(name);
        return 0;
    }
    if (v < 256) {
        free(st->type_low[v]);
        st->type_low[v] = name;
    } else {
        st->high_value[st->high_n] = (unsigned)v;
        st->high_name[st->high_n++] = name;
    }
    return 1;
}

/* The names of fast_dns_names.h, where the dnspython installed is the one they were written from
 * (dns.version, the only module of dnspython a run imports for it); 0 with another one. */
static int table_names(DnsState *st) {
    PyObject *module = PyImport_ImportModule("dns.version");
    PyObject *version = module ? PyObject_GetAttrString(module, "version") : NULL;
    const char *text = version && PyUnicode_Check(version) ? PyUnicode_AsUTF8(version) : NULL;
    int ok = text != NULL && strcmp(text, FI_DNS_NAMES_DNSPYTHON) == 0;
    Py_XDECREF(module);
    Py_XDECREF(version);
    size_t ntypes = sizeof fi_dns_type_names / sizeof *fi_dns_type_names;
    for (size_t i = 0; ok && i < ntypes; i++)
        ok = put_type(st, fi_dns_type_names[i].value, strdup(fi_dns_type_names[i].name));
    for (int i = 0; ok && i < 16; i++)
        ok = (st->rcode[i] = strdup(fi_dns_rcode_names[i])) != NULL;
    PyErr_Clear();
    return ok;
}

static char *py_text(PyObject *fn, long value) {
    PyObject *r = PyObject_CallFunction(fn, "l", value);
    if (r == NULL)
        return NULL;
    const char *s = PyUnicode_AsUTF8(r);
    char *out = s ? strdup(s) : NULL;
    Py_DECREF(r);
    return out;
}

/* The names dnspython gives the types it knows (dns.rdatatype.RdataType) and the 16 rcodes a
 * header holds, asked from it (another dnspython than fast_dns_names.h's); 0 when dnspython could
 * not be asked (then DNS rows decline). */
static int load_names(DnsState *st, PyObject *rdatatype, PyObject *rcode) {
    PyObject *to_text = PyObject_GetAttrString(rdatatype, "to_text");
    PyObject *members = PyObject_GetAttrString(rdatatype, "RdataType");
    PyObject *it = members ? PyObject_GetIter(members) : NULL;
    PyObject *rc_text = PyObject_GetAttrString(rcode, "to_text");
    int ok = to_text && it && rc_text;
    for (PyObject *m; ok && (m = PyIter_Next(it)) != NULL; Py_DECREF(m)) {
        long v = PyLong_AsLong(m);
        ok = put_type(st, v, (v >= 0 && v <= 0xFFFF) ? py_text(to_text, v) : NULL);
    }
    for (int i = 0; ok && i < 16; i++) {
        free(st->rcode[i]);
        ok = (st->rcode[i] = py_text(rc_text, i)) != NULL;
    }
    Py_XDECREF(to_text);
    Py_XDECREF(members);
    Py_XDECREF(it);
    Py_XDECREF(rc_text);
    return ok && !PyErr_Occurred();
}

/* Whether dnspython, in this process, would read an A or AAAA record of class IN as a generic
 * one ("\# 4 ..."): dns.rdata.get_rdata_class looks up (IN, type), then (ANY, type), where an
 * earlier record of class ANY leaves GenericRdata. Looked at, not changed; 1 when it cannot
 * tell (then such records are declined). */
static int ip_generic(PyObject *rdata) {
    PyObject *classes = PyObject_GetAttrString(rdata, "_rdata_classes");
    PyObject *generic = PyObject_GetAttrString(rdata, "GenericRdata");
    int out = classes == NULL || generic == NULL || !PyDict_Check(classes);
    for (int i = 0; !out && i < 2; i++) {
        long type = i ? 28 : 1;
        PyObject *in = Py_BuildValue("(ll)", 1L, type), *any = Py_BuildValue("(ll)", 255L, type);
        PyObject *cls = in ? PyDict_GetItemWithError(classes, in) : NULL;  /* borrowed */
        if (cls == NULL && any != NULL && !PyErr_Occurred())
            cls = PyDict_GetItemWithError(classes, any);
        out = in == NULL || any == NULL || PyErr_Occurred() || cls == generic;
        Py_XDECREF(in);
        Py_XDECREF(any);
    }
    Py_XDECREF(classes);
    Py_XDECREF(generic);
    return out;
}

/* The names (fast_dns_names.h, or dnspython asked) and whether dnspython would read an A or AAAA
 * in IN as generic: a dnspython not yet imported would not (its class cache starts empty), so it
 * is looked at only where it is imported already. */
static void ask_dnspython(DnsState *st) {
    PyGILState_STATE gil = PyGILState_Ensure();
    st->names_ok = table_names(st);
    if (!st->names_ok) {
        PyObject *rdatatype = PyImport_ImportModule("dns.rdatatype");
        PyObject *rcode = PyImport_ImportModule("dns.rcode");
        st->names_ok = rdatatype && rcode && load_names(st, rdatatype, rcode);
        Py_XDECREF(rdatatype);
        Py_XDECREF(rcode);
        PyErr_Clear();
    }
    PyObject *name = PyUnicode_FromString("dns.rdata");
    PyObject *rdata = name ? PyImport_GetModule(name) : NULL;
    st->ip_generic = PyErr_Occurred() || (rdata != NULL && ip_generic(rdata));
    Py_XDECREF(name);
    Py_XDECREF(rdata);
    PyErr_Clear();
    PyGILState_Release(gil);
}

/* annotate_dns._type_text: dnspython's mnemonic, else its generic syntax "TYPE<n>" (RFC 3597
 * section 5; dns.enum.IntEnum.to_text: tests/test_fast_dns_names.py checks all 65536). */
static void type_text(const DnsState *st, unsigned t, Buf *out) {
    const char *name = t < 256 ? st->type_low[t] : NULL;
    for (int i = 0; name == NULL && i < st->high_n; i++)
        if (st->high_value[i] == t)
            name = st->high_name[i];
    if (name != NULL) {
        buf_puts(out, name);
        return;
    }
    char tmp[16];
    snprintf(tmp, sizeof tmp, "TYPE%u", t);
    buf_puts(out, tmp);
}

/* ---- the state's life ------------------------------------------------------------------------- */

DnsState *dns_new(const int *ports, int nports) {
    DnsState *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    for (int i = 0; i < nports && i < 64; i++)
        st->ports[st->nports++] = ports[i];
    map_init(&st->resolvers, 0, NULL);
    map_init(&st->leg_sockets, 0, NULL);
    map_init(&st->taken, sizeof(Taken), taken_drop);
    map_init(&st->flood, sizeof(int64_t), NULL);
    map_init(&st->pending, sizeof(Query), query_drop);
    map_init(&st->answered, sizeof(int64_t), NULL);
    map_init(&st->relay_paths, 0, NULL);
    map_init(&st->legs, sizeof(int64_t), NULL);
    ask_dnspython(st);
    return st;
}

static void recent_free(Recent *r) {
    if (r == NULL)
        return;
    free(r->paths);
    free(r->payload);
    free(r);
}

void dns_free(DnsState *st) {
    if (st == NULL)
        return;
    Map *maps[] = {&st->resolvers, &st->leg_sockets, &st->taken, &st->flood, &st->pending,
                   &st->answered, &st->relay_paths, &st->legs};
    for (size_t i = 0; i < sizeof maps / sizeof *maps; i++)
        map_clear(maps[i]);
    for (int i = 0; i < st->nrecent; i++)
        recent_free(st->recent[i]);
    recent_free(st->spare);
    for (int i = 0; i < 256; i++)
        free(st->type_low[i]);
    for (int i = 0; i < st->high_n; i++)
        free(st->high_name[i]);
    for (int i = 0; i < 16; i++)
        free(st->rcode[i]);
    free(st->records);
    free(st->question.p);
    free(st->answers.p);
    free(st->scratch.p);
    free(st->last_qname.p);
    free(st);
}

/* ---- reading a message: wire/dns_wire.py ------------------------------------------------------ */

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

/* dns_wire._name_end: where a name written out in labels ends, or -1 (cut short, a compression
 * pointer or another label type, longer than 255 bytes). */
static long name_end(const uint8_t *data, size_t size, size_t off) {
    size_t start = off;
    while (off < size) {
        unsigned n = data[off];
        if (n == 0)
            return off + 1 - start <= 255 ? (long)(off + 1) : -1;
        if (n > 63)
            return -1;
        off += n + 1;
    }
    return -1;
}

/* Names compare without case (RFC 4343), as bytes.lower() and dnspython compare them. */
static int same_name(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++) {
        uint8_t x = a[i], y = b[i];
        x = (x >= 'A' && x <= 'Z') ? x + 32 : x;
        y = (y >= 'A' && y <= 'Z') ? y + 32 : y;
        if (x != y)
            return 0;
    }
    return 1;
}

static int add_record(DnsState *st, Msg *m, const uint8_t *owner, size_t owner_len,
                      const uint8_t *rr) {
    if (m->nrecords >= st->records_cap) {
        int cap = st->records_cap ? st->records_cap * 2 : 16;
        Record *r = realloc(st->records, (size_t)cap * sizeof *r);
        if (r == NULL)
            return -1;
        st->records = r;
        st->records_cap = cap;
    }
    Record *r = &st->records[m->nrecords];
    r->owner = owner;
    r->owner_len = owner_len;
    r->ttl = (uint32_t)rr[4] << 24 | (uint32_t)rr[5] << 16 | (uint32_t)rr[6] << 8 | rr[7];
    r->rdata = rr + 10;
    r->rtype = TYPE_A;
    r->rclass = CLASS_IN;
    r->rdlen = 4;
    r->group = m->nrecords;
    for (int i = 0; i < m->nrecords; i++)
        if (same_name(st->records[i].owner, st->records[i].owner_len, owner, owner_len)) {
            r->group = st->records[i].group;
            break;
        }
    m->nrecords++;
    return 0;
}

/* dns_wire._answers: 1 = all `count` answers are A in IN (kept in st->records), ending at *off;
 * 0 = anything else (dnspython's to read). */
static int read_answers(DnsState *st, Msg *m, const uint8_t *data, size_t size, size_t *off,
                        unsigned count) {
    size_t at = *off;
    for (unsigned i = 0; i < count; i++) {
        const uint8_t *owner;
        size_t owner_len;
        if (at + 2 <= size && data[at] == 0xC0 && data[at + 1] == 0x0C) {
            owner = m->qname;
            owner_len = m->qname_len;
            at += 2;
        } else {
            long end = name_end(data, size, at);
            if (end < 0)
                return 0;
            owner = data + at;
            owner_len = (size_t)end - at;
            at = (size_t)end;
        }
        if (at + 10 > size)
            return 0;
        const uint8_t *rr = data + at;
        if (be16(rr) != TYPE_A || be16(rr + 2) != CLASS_IN || be16(rr + 8) != 4
                || at + 14 > size)
            return 0;
        if (add_record(st, m, owner, owner_len, rr) < 0)
            return 0;
        at += 14;
    }
    *off = at;
    return 1;
}

/* ---- the shapes read_simple leaves to dnspython, read as dnspython reads them ----------------- */

/* dns.name.from_wire_parser, as dnspython decompresses (RFC 1035 section 4.1.4): pointers only
 * backwards, at most 16 in a chain, a target never overlapping the name's own bytes, at most
 * 255 bytes in all. Writes the name out in labels into out[256]; returns where the name ends
 * in the message, or -1 where dnspython raises (then the caller declines). */
static long read_name(const uint8_t *data, size_t end, size_t off, uint8_t *out, size_t *len) {
    size_t cur = off, start = off, biggest = off, furthest = off, n = 0;
    int hops = 0;
    for (;;) {
        if (cur + 1 > end)
            return -1;
        unsigned count = data[cur++];
        furthest = cur > furthest ? cur : furthest;
        if (count == 0)
            break;
        if (count < 64) {
            if (cur + count > end || n + count + 1 > 255)
                return -1;
            out[n++] = (uint8_t)count;
            memcpy(out + n, data + cur, count);
            n += count;
            cur += count;
            furthest = cur > furthest ? cur : furthest;
        } else if (count >= 192) {
            if (cur + 1 > end)
                return -1;
            size_t target = (count & 0x3F) * 256u + data[cur++];
            furthest = cur > furthest ? cur : furthest;
            if (target >= biggest || ++hops > 16 || start > end)
                return -1;
            biggest = target;
            end = start;  /* the target must end before this part of the name */
            cur = target;
            start = target;
        } else {
            return -1;
        }
    }
    if (n + 1 > 255)  /* the root label too: dns.name.NameTooLong */
        return -1;
    out[n++] = 0;
    *len = n;
    return (long)furthest;
}

/* TXT rdata (RFC 1035 section 3.3.14): one or more character-strings filling it exactly. */
static int txt_ok(const uint8_t *rd, size_t n) {
    size_t off = 0;
    while (off < n)
        off += 1u + rd[off];
    return n > 0 && off == n;
}

/* CNAME rdata (RFC 1035 section 3.3.1): one name, filling it; written out into target. */
static int cname_ok(const uint8_t *data, size_t off, size_t rdlen, uint8_t *target) {
    size_t len;
    long at = read_name(data, off + rdlen, off, target, &len);
    return at >= 0 && (size_t)at == off + rdlen;
}

/* SOA rdata (RFC 1035 section 3.3.13): two names, then five 32-bit numbers, filling it. */
static int soa_ok(const uint8_t *data, size_t off, size_t rdlen) {
    uint8_t name[256];
    size_t len, end = off + rdlen;
    long at = read_name(data, end, off, name, &len);
    if (at < 0)
        return 0;
    at = read_name(data, end, (size_t)at, name, &len);
    return at >= 0 && (size_t)at + 20 == end;
}

/* dns.ipv6.inet_ntoa: groups in hex without leading zeros, the first longest run of two or more
 * zero groups as "::", and an IPv4 address written dotted after "::" or "::ffff:" when the
 * run starts the address and is 6 groups long (or 5, before ffff). */
static void ipv6_text(const uint8_t *a, Buf *out) {
    static const char digits[] = "0123456789abcdef";
    char groups[8][5];
    int best_start = 0, best_len = 0, start = -1;
    for (int i = 0; i < 8; i++) {
        unsigned v = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
        char *o = groups[i];
        int shift = 12;
        while (shift > 0 && ((v >> shift) & 15) == 0)
            shift -= 4;
        for (; shift >= 0; shift -= 4)
            *o++ = digits[(v >> shift) & 15];
        *o = 0;
        if (v == 0 && start < 0)
            start = i;
        if ((v != 0 || i == 7) && start >= 0) {
            int len = (v == 0 ? i + 1 : i) - start;
            if (len > best_len) {
                best_start = start;
                best_len = len;
            }
            start = -1;
        }
    }
    char tmp[64];
    if (best_len > 1 && best_start == 0
            && (best_len == 6 || (best_len == 5 && strcmp(groups[5], "ffff") == 0))) {
        snprintf(tmp, sizeof tmp, "%s%u.%u.%u.%u", best_len == 6 ? "::" : "::ffff:", a[12], a[13],
                 a[14], a[15]);
        buf_puts(out, tmp);
        return;
    }
    for (int i = 0; i < 8; i++) {
        if (best_len > 1 && i == best_start) {
            buf_put(out, "::", 2);
            i += best_len - 1;
            continue;
        }
        if (i > 0 && !(best_len > 1 && i == best_start + best_len))
            buf_put(out, ":", 1);
        buf_puts(out, groups[i]);
    }
}

static void name_text(const uint8_t *wire, Buf *out);

/* A record's rdata as dnspython's to_text writes it: A (RFC 1035 3.4.1) dotted, TXT quoted with
 * '"' and '\' escaped and bytes outside 0x20-0x7e as \ddd (dns.rdata._escapify), AAAA by
 * ipv6_text, CNAME its target's name as the question's is written. */
static void rdata_text(const Record *r, Buf *out) {
    char tmp[20], *o = tmp;
    if (r->rtype == TYPE_CNAME) {
        name_text(r->target, out);
        return;
    }
    if (r->rtype == 28) {
        ipv6_text(r->rdata, out);
        return;
    }
    if (r->rtype == TYPE_A) {
        for (int k = 0; k < 4; k++) {
            o = put_u64(o, r->rdata[k]);
            *o++ = k < 3 ? '.' : 0;
        }
        buf_put(out, tmp, (size_t)(o - 1 - tmp));
        return;
    }
    for (size_t off = 0; off < r->rdlen; off += 1u + r->rdata[off]) {
        buf_put(out, off ? " \"" : "\"", off ? 2 : 1);
        for (unsigned i = 1; i <= r->rdata[off]; i++) {
            uint8_t c = r->rdata[off + i];
            if (c == '"' || c == '\\') {
                tmp[0] = '\\';
                tmp[1] = (char)c;
                buf_put(out, tmp, 2);
            } else if (c >= 0x20 && c < 0x7F) {
                buf_put(out, (const char *)&c, 1);
            } else {
                snprintf(tmp, sizeof tmp, "\\%03u", c);
                buf_put(out, tmp, 4);
            }
        }
        buf_put(out, "\"", 1);
    }
}

/* One record of a section, kept when it is a shape read here exactly: answers A, AAAA or CNAME
 * in IN, TXT in IN or CH, authority SOA in IN. 1 = kept (*off after it), 0 = anything else. */
static int more_record(DnsState *st, Msg *m, const uint8_t *data, size_t size, size_t *off,
                       int authority) {
    if (m->nrecords >= st->records_cap) {
        int cap = st->records_cap ? st->records_cap * 2 : 16;
        Record *r = realloc(st->records, (size_t)cap * sizeof *r);
        if (r == NULL)
            return 0;
        st->records = r;
        st->records_cap = cap;
    }
    Record *r = &st->records[m->nrecords];
    long at = read_name(data, size, *off, r->own, &r->owner_len);
    if (at < 0 || (size_t)at + 10 > size)
        return 0;
    const uint8_t *rr = data + at;
    r->rtype = be16(rr);
    r->rclass = be16(rr + 2);
    r->ttl = (uint32_t)rr[4] << 24 | (uint32_t)rr[5] << 16 | (uint32_t)rr[6] << 8 | rr[7];
    r->rdlen = be16(rr + 8);
    r->rdata = rr + 10;
    size_t rd = (size_t)at + 10;
    if (rd + r->rdlen > size)
        return 0;
    int ok = authority ? r->rtype == 6 && r->rclass == CLASS_IN && soa_ok(data, rd, r->rdlen)
        : r->rtype == TYPE_CNAME ? r->rclass == CLASS_IN && cname_ok(data, rd, r->rdlen, r->target)
        : (r->rtype == TYPE_A && r->rclass == CLASS_IN && r->rdlen == 4)
          || (r->rtype == 28 && r->rclass == CLASS_IN && r->rdlen == 16)
          || (r->rtype == 16 && (r->rclass == CLASS_IN || r->rclass == 3)
              && txt_ok(r->rdata, r->rdlen));
    if (!ok || (st->ip_generic && (r->rtype == TYPE_A || r->rtype == 28)))
        return 0;
    *off = rd + r->rdlen;
    m->nrecords++;
    return 1;
}

/* EDNS options (RFC 6891 section 6.1.2) dnspython reads without a doubt: a COOKIE (RFC 7873
 * section 4: an 8-byte client cookie, a server cookie of 8 to 32 bytes or none, as
 * dns.edns.CookieOption checks) and PADDING (RFC 7830, a generic option to dnspython). */
static int options_ok(const uint8_t *rd, size_t n) {
    size_t off = 0;
    while (off < n) {
        if (off + 4 > n)
            return 0;
        unsigned code = be16(rd + off), len = be16(rd + off + 2);
        off += 4;
        if (off + len > n)
            return 0;
        if (code == 10 && !(len == 8 || (len >= 16 && len <= 40)))
            return 0;
        if (code != 10 && code != 12)
            return 0;
        off += len;
    }
    return 1;
}

/* The additional section when it is one OPT record (RFC 6891 section 6.1.1) owned by the root,
 * with no extended rcode bits (the rcode stays the header's): 1 = so (*off after it). */
static int opt_ok(const uint8_t *data, size_t size, size_t *off) {
    uint8_t name[256];
    size_t len;
    long at = read_name(data, size, *off, name, &len);
    if (at < 0 || len != 1 || (size_t)at + 10 > size)
        return 0;
    const uint8_t *rr = data + at;
    size_t rdlen = be16(rr + 8);
    if (be16(rr) != 41 || rr[4] != 0 || (size_t)at + 10 + rdlen > size
            || !options_ok(rr + 10, rdlen))
        return 0;
    *off = (size_t)at + 10 + rdlen;
    return 1;
}

/* Each record's RRset (dnspython's find_rrset: same owner without case, class and type, in its
 * section), once the records are read. */
static void group_records(DnsState *st, const Msg *m) {
    for (int i = 0; i < m->nrecords; i++) {
        Record *r = &st->records[i];
        r->owner = r->own;
        r->group = i;
        int from = i < m->nanswers ? 0 : m->nanswers;
        for (int j = from; j < i; j++) {
            const Record *o = &st->records[j];
            if (o->rtype == r->rtype && o->rclass == r->rclass
                    && same_name(o->own, o->owner_len, r->own, r->owner_len)) {
                r->group = o->group;
                break;
            }
        }
    }
}

/* parse_dns by dnspython, for the shapes read here exactly (the reference captures' NXDOMAIN
 * with an SOA in the authority section, TXT answers, compressed owners): 1 = read, -1 =
 * anything else (decline). A standard query, one question written out in labels, in the
 * additional section an OPT record at most (opt_ok), nothing after the last record. */
static int read_more(DnsState *st, const uint8_t *data, size_t size, Msg *m) {
    unsigned ancount = be16(data + 6), nscount = be16(data + 8), arcount = be16(data + 10);
    if (arcount > 1 || (be16(data + 2) & 0x7800))
        return -1;
    long end = name_end(data, size, 12);
    if (end < 0 || (size_t)end + 4 > size)
        return -1;
    m->nrecords = 0;
    size_t off = (size_t)end + 4;
    for (unsigned i = 0; i < ancount; i++)
        if (!more_record(st, m, data, size, &off, 0))
            return -1;
    m->nanswers = m->nrecords;
    for (unsigned i = 0; i < nscount; i++)
        if (!more_record(st, m, data, size, &off, 1))
            return -1;
    if (arcount && !opt_ok(data, size, &off))
        return -1;
    if (off != size)
        return -1;
    group_records(st, m);
    m->qid = be16(data);
    m->response = (be16(data + 2) & 0x8000) != 0;
    m->rcode = be16(data + 2) & 0x0F;
    m->qname = data + 12;
    m->qname_len = (size_t)end - 12;
    m->qtype = be16(data + end);
    m->qclass = be16(data + end + 2);
    return 1;
}

/* parse_dns as far as read_simple and read_more go: 1 = read (m filled), 0 = not a DNS message
 * (parse_dns's None, certain without dnspython), -1 = a shape only dnspython reads. */
static int read_exact(DnsState *st, const uint8_t *data, size_t size, Msg *m) {
    memset(m, 0, sizeof *m);
    if (size < 12 || be16(data + 4) != 1)
        return 0;
    unsigned flags = be16(data + 2), ancount = be16(data + 6);
    if (flags & 0x7800)
        return -1;
    if (be16(data + 8) || be16(data + 10))
        return read_more(st, data, size, m);
    long end = name_end(data, size, 12);
    if (end < 0 || (size_t)end + 4 > size)
        return -1;
    m->qid = be16(data);
    m->response = (flags & 0x8000) != 0;
    m->rcode = flags & 0x0F;
    m->qname = data + 12;
    m->qname_len = (size_t)end - 12;
    m->qtype = be16(data + end);
    m->qclass = be16(data + end + 2);
    size_t off = (size_t)end + 4;
    if (ancount && !read_answers(st, m, data, size, &off, ancount))
        return read_more(st, data, size, m);
    m->nanswers = m->nrecords;
    return off == size ? 1 : -1;  /* trailing bytes: dnspython's call */
}

/* dns_wire._label_text: dnspython writes these bytes of a label as they are, escapes the rest. */
static int plain(uint8_t c) {
    return c >= 0x21 && c < 0x7F && strchr("\"().;\\@$", c) == NULL;
}

/* dns_wire._label_text for one label: as it is when every byte is plain, else escaped. */
static void label_text(const uint8_t *label, unsigned n, Buf *out) {
    unsigned i = 0;
    while (i < n && plain(label[i]))
        i++;
    if (i == n) {
        buf_put(out, (const char *)label, n);
        return;
    }
    for (i = 0; i < n; i++) {
        uint8_t c = label[i];
        char tmp[8];
        if (plain(c))
            buf_put(out, (const char *)&c, 1);
        else if (c > 0x20 && c < 0x7F) {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            buf_put(out, tmp, 2);
        } else {
            snprintf(tmp, sizeof tmp, "\\%03u", c);
            buf_put(out, tmp, 4);
        }
    }
}

/* dns_wire.name_text: absolute, "." for the root, special bytes escaped ("\.", "\032"). */
static void name_text(const uint8_t *wire, Buf *out) {
    size_t off = 0;
    if (wire[0] == 0) {
        buf_put(out, ".", 1);
        return;
    }
    while (wire[off]) {
        label_text(wire + off + 1, wire[off], out);
        buf_put(out, ".", 1);
        off += wire[off] + 1u;
    }
}

/* The question ("name TYPE") and the answers' addresses as dnspython lists them: one RRset per
 * owner in order of first appearance, an address once per RRset. */
static int msg_texts(DnsState *st, const Msg *m) {
    st->answers.len = 0;
    if (m->qname_len != st->last_qname.len || m->qtype != st->last_qtype || st->question.len == 0
            || memcmp(m->qname, st->last_qname.p, m->qname_len) != 0) {
        /* a capture asks the same few names again: the last question's text is kept */
        st->question.len = st->last_qname.len = 0;
        name_text(m->qname, &st->question);
        buf_put(&st->question, " ", 1);
        type_text(st, m->qtype, &st->question);
        buf_put(&st->last_qname, (const char *)m->qname, m->qname_len);
        st->last_qtype = m->qtype;
    }
    for (int g = 0; g < m->nanswers; g++) {
        if (st->records[g].group != g)
            continue;
        for (int i = g; i < m->nanswers; i++) {
            const Record *r = &st->records[i];
            int dup = r->group != g;
            /* a CNAME RRset holds one record, the last (dns.rdatatype.is_singleton) */
            for (int j = i + 1; !dup && r->rtype == TYPE_CNAME && j < m->nanswers; j++)
                dup = st->records[j].group == g;
            for (int j = g; !dup && r->rtype != TYPE_CNAME && j < i; j++)
                dup = st->records[j].group == g && st->records[j].rdlen == r->rdlen
                      && memcmp(st->records[j].rdata, r->rdata, r->rdlen) == 0;
            if (dup)
                continue;
            if (st->answers.len)
                buf_put(&st->answers, " ", 1);
            rdata_text(r, &st->answers);
        }
    }
    if (st->answers.len == 0)
        buf_put(&st->answers, "", 0);
    return st->question.p && st->answers.p ? 0 : -1;
}

/* annotate_dns.answer_ttl: the first RRset's TTL (answer section, else authority), which
 * dnspython minimises over its records (a TTL above 2^31-1 counts as 0); -1 for None. */
static int64_t answer_ttl(const DnsState *st, const Msg *m) {
    int64_t ttl = -1;
    int first = m->nanswers ? 0 : m->nanswers;  /* msg.answer or msg.authority */
    int end = m->nanswers ? m->nanswers : m->nrecords;
    for (int i = first; i < end; i++) {
        if (st->records[i].group != first)
            continue;
        int64_t t = st->records[i].ttl > 0x7FFFFFFFu ? 0 : st->records[i].ttl;
        if (ttl < 0 || t < ttl)
            ttl = t;
    }
    return ttl;
}

/* Whether dnspython's reader certainly fails before it reads any record's data: on the question's
 * name (dns.name's rules, read_name), on the 4 bytes after it, on bytes after a lone question
 * (TrailingJunk), or on the first record's name, header or length. Only then is a message it
 * was not read here known to be none: reading a record's data can leave state behind in
 * dnspython (dns.rdata.get_rdata_class caches a generic class for an A or AAAA of class ANY,
 * and later A answers print as "\# 4 ..."), which the compiled path does not follow. */
static int fails_early(const uint8_t *data, size_t size) {
    uint8_t name[256];
    size_t len;
    long at = read_name(data, size, 12, name, &len);
    if (at < 0 || (size_t)at + 4 > size)
        return 1;
    size_t off = (size_t)at + 4;
    if ((size_t)be16(data + 6) + be16(data + 8) + be16(data + 10) == 0)
        return off < size;
    at = read_name(data, size, off, name, &len);
    return at < 0 || (size_t)at + 10 > size || (size_t)at + 10 + be16(data + at + 8) > size;
}

/* parse_dns: 1 = read (m filled), 0 = not a DNS message, -1 = only dnspython can tell (decline). */
static int dns_read(DnsState *st, const uint8_t *data, size_t size, Msg *m) {
    int r = read_exact(st, data, size, m);
    return r < 0 && fails_early(data, size) ? 0 : r;
}

/* ---- DnsAnnotator.is_dns ---------------------------------------------------------------------- */

static int on_dns_port(const DnsState *st, const Pkt *p) {
    for (int i = 0; i < st->nports; i++)
        if (p->sport == st->ports[i] || p->dport == st->ports[i])
            return 1;
    return 0;
}

int dns_is_dns(DnsState *st, const Pkt *p, Ctx *ctx) {
    if (on_dns_port(st, p))
        return 1;
    Msg m;
    int r = dns_read(st, p->payload, p->payload_len, &m);
    if (r < 0)
        return ctx_decline(ctx, "packet %lld: a DNS message only dnspython reads",
                           (long long)p->number);
    return r;
}


/* ---- rows: DnsAnnotator.row and its helpers -------------------------------------------------- */

typedef struct Cur {            /* the packet being annotated */
    DnsState *st;
    const Pkt *p;
    Row *row;
    Ctx *ctx;
    const Msg *m;
    const char *question;       /* in the row's arena */
    const char *hexid;          /* f"{qid:#06x}", in the row's arena */
    const char *src, *dst;      /* the endpoints, in the row's arena */
    size_t srclen, dstlen;
    char key[KEY_MAX];          /* (client, server, id): the tables' key for this message */
    size_t klen;
    uint64_t khash;
    int oom;
} Cur;

static const char *keep(Cur *c, const char *s) {
    const char *out = row_strdup(c->row, s);
    if (out == NULL) {
        c->oom = 1;
        return "";
    }
    return out;
}

static void fact(Cur *c, Action a, Kind k, Holder h1, int nh) {
    c->row->action = a;
    c->row->kind = k;
    c->row->key = c->hexid;
    c->row->holders[0] = h1;
    c->row->nholders = nh;
}

static void checked(Cur *c, int r) {
    if (r < 0)
        c->oom = 1;
}

/* DnsAnnotator._relay: -1 for a query the client sent itself; else the packet it relays (0:
 * unseen). A path is a middlebox's leg once a query first appears on it after another path
 * carried the same bytes; a client sending the same bytes again on its own path retransmits. */
static int64_t relay(Cur *c) {
    DnsState *st = c->st;
    const Pkt *p = c->p;
    char path[KEY_MAX];
    size_t plen = key2(path, p->src, c->srclen, p->dst, c->dstlen);
    uint64_t h = payload_hash(p->payload, p->payload_len);
    Recent *r = NULL;
    for (int i = 0; i < st->nrecent && r == NULL; i++) {
        if (st->recent_hash[i] != h)  /* side by side: no pointer followed for a miss */
            continue;
        Recent *x = st->recent[i];
        if (x->len == p->payload_len && memcmp(x->payload, p->payload, x->len) == 0) {
            r = x;
            memmove(&st->recent[i], &st->recent[i + 1],
                    (size_t)(st->nrecent - i - 1) * sizeof r);
            memmove(&st->recent_hash[i], &st->recent_hash[i + 1],
                    (size_t)(st->nrecent - i - 1) * sizeof h);
            st->nrecent--;
        }
    }
    if (r == NULL) {
        r = st->spare ? st->spare : calloc(1, sizeof *r);
        st->spare = NULL;
        if (r != NULL && r->room <= p->payload_len) {  /* else the spare's buffer is reused */
            uint8_t *bigger = realloc(r->payload, p->payload_len + 1);
            if (bigger == NULL) {
                recent_free(r);
                r = NULL;
            } else {
                r->payload = bigger;
                r->room = p->payload_len + 1;
            }
        }
        if (r == NULL) {
            c->oom = 1;
            return -1;
        }
        memcpy(r->payload, p->payload, p->payload_len);
        r->len = p->payload_len;
        r->hash = h;
        r->npaths = 0;
    }
    int before_here = 0, others = 0, here = -1;
    int64_t most = 0;
    for (int i = 0; i < r->npaths; i++) {
        if (r->paths[i].len == plen && memcmp(r->paths[i].path, path, plen) == 0) {
            before_here = 1;
            here = i;
        } else {
            others = 1;
            most = r->paths[i].number > most ? r->paths[i].number : most;
        }
    }
    if (here < 0) {
        if (r->npaths == r->cap) {
            int cap = r->cap ? r->cap * 2 : 2;
            PathSeen *ps = realloc(r->paths, (size_t)cap * sizeof *ps);
            if (ps == NULL) {
                c->oom = 1;
                recent_free(r);
                return -1;
            }
            r->paths = ps;
            r->cap = cap;
        }
        here = r->npaths++;
        r->paths[here].len = plen;
        memcpy(r->paths[here].path, path, plen);
    }
    r->paths[here].number = p->number;
    st->recent_hash[st->nrecent] = h;
    st->recent[st->nrecent++] = r;
    while (st->nrecent > RECENT_MAX) {
        recent_free(st->spare);
        st->spare = st->recent[0];
        memmove(&st->recent[0], &st->recent[1], (size_t)(st->nrecent - 1) * sizeof r);
        memmove(&st->recent_hash[0], &st->recent_hash[1], (size_t)(st->nrecent - 1) * sizeof h);
        st->nrecent--;
    }
    if (map_get(&st->relay_paths, path, plen) == NULL) {
        if (!others || before_here)
            return -1;  /* the client's own query, or its retransmission */
        checked(c, map_put(&st->relay_paths, path, plen, NULL) ? 0 : -1);
        map_bound(&st->relay_paths, FI_MAX_PENDING);
    }
    return most;
}

/* DnsAnnotator._asked_by_clients: recent client queries, still unanswered, for this question to
 * a server on src's host but another port, from another socket, while this query goes to yet
 * another server: src is that server's own upstream socket (a resolver's miss). */
static int asked_by_clients(Cur *c, Query **found, char (*servers)[FI_ENDPOINT]) {
    const char *src = c->p->src, *dst = c->p->dst;
    size_t hl = host_len(src);
    int n = 0, looked = 0;
    for (Query *q = map_last(&c->st->pending); q != NULL && looked < ASKED_LOOK;
            q = map_prev(q), looked++) {
        size_t klen;
        const char *client = (const char *)map_key(q, &klen);
        const char *server = client + strlen(client) + 1;
        if (strcmp(q->question, c->question) == 0 && !q->leg && !q->upstream
                && strcmp(server, src) != 0 && strcmp(client, src) != 0
                && strcmp(server, dst) != 0 && host_len(server) == hl
                && memcmp(server, src, hl) == 0) {
            found[n] = q;
            snprintf(servers[n], FI_ENDPOINT, "%s", server);
            n++;
        }
    }
    return n;
}

/* DnsAnnotator._query: a client's query (new, again, or a resolver's upstream query). */
static void query_row(Cur *c) {
    DnsState *st = c->st;
    Row *row = c->row;
    Query *first = map_get_h(&st->pending, c->key, c->klen, c->khash);
    if (first != NULL && strcmp(first->question, c->question) == 0) {
        first->copies++;
        row->summary = row_cat(row, "query ", c->hexid, " ", c->question, " (again)", NULL);
        fact(c, A_USES, K_DNS_RETRANSMIT, H_CLIENT_APP, 1);
        checked(c, row_ref(row, first->number));
        checked(c, val_int(row, "copies", first->copies));
        return;
    }
    Query *asked[ASKED_LOOK];
    char servers[ASKED_LOOK][FI_ENDPOINT];
    int nasked = asked_by_clients(c, asked, servers);
    int64_t asked_number = nasked ? asked[0]->number : 0;
    for (int i = 0; i < nasked; i++)
        asked[i]->upstream = c->p->number;
    int created;
    Query *q = map_put_h(&st->pending, c->key, c->klen, c->khash, &created);
    if (q == NULL) {
        c->oom = 1;
        return;
    }
    if (!created)
        query_drop(q);  /* same key, another question: replaced in its place */
    size_t qlen = strlen(c->question);
    q->question = qlen < sizeof q->text ? q->text : malloc(qlen + 1);
    if (q->question == NULL) {
        q->question = q->text;  /* for query_drop */
        q->text[0] = 0;
        c->oom = 1;
        return;
    }
    memcpy(q->question, c->question, qlen + 1);
    q->number = c->p->number;
    q->time = c->p->time;
    q->copies = 1;
    q->leg = nasked > 0;
    q->upstream = 0;
    map_bound(&st->pending, FI_MAX_PENDING);
    if (nasked) {
        checked(c, set_add(&st->resolvers, servers[0]));
        checked(c, map_put(&st->leg_sockets, c->src, c->srclen, NULL) ? 0 : -1);
        row->summary = row_cat(row, "query ", c->hexid, " ", c->question, " (upstream)", NULL);
        fact(c, A_CREATES, K_DNS_UPSTREAM, H_SERVER_APP, 1);
        checked(c, row_ref(row, asked_number));
        checked(c, val_str(row, "resolver", keep(c, servers[0])));
        checked(c, val_str(row, "server", c->dst));
        checked(c, val_str(row, "question", c->question));
        return;
    }
    row->summary = row_cat(row, "query ", c->hexid, " ", c->question, NULL);
    fact(c, A_CREATES, K_DNS_QUERY, H_CLIENT_APP, 2);
    row->holders[1] = H_CLIENT_KERNEL;
    checked(c, val_str(row, "question", c->question));
    checked(c, val_str(row, "server", c->dst));
    checked(c, val_str(row, "client", c->src));
}

/* The row of a query: a relay leg's, or DnsAnnotator._query's. */
static void query_or_relayed(Cur *c) {
    int64_t relayed = relay(c);
    if (relayed < 0) {
        query_row(c);
        return;
    }
    int64_t *leg = map_put_h(&c->st->legs, c->key, c->klen, c->khash, NULL);
    if (leg == NULL) {
        c->oom = 1;
        return;
    }
    *leg = c->p->number;
    map_bound(&c->st->legs, FI_MAX_PENDING);
    c->row->summary = row_cat(c->row, "query ", c->hexid, " ", c->question, " (relayed)", NULL);
    fact(c, A_NONE, K_DNS_RELAYED, H_PACKET, 1);
    if (relayed)
        checked(c, row_ref(c->row, relayed));
    checked(c, val_str(c->row, "source", c->src));
}

/* DnsAnnotator._answer, an answer matched by source, id and question against what is pending:
 * the first five cases of a mismatch, the match itself. */
static void matched_row(Cur *c, Query *q) {
    DnsState *st = c->st;
    Row *row = c->row;
    int64_t number = q->number, copies = q->copies, upstream = q->upstream;
    double rtt_ms = (c->p->time - q->time) * 1000;
    map_del(&st->pending, q);
    int64_t *answered = map_put_h(&st->answered, c->key, c->klen, c->khash, NULL);
    if (answered == NULL) {
        c->oom = 1;
        return;
    }
    *answered = c->p->number;
    map_bound(&st->answered, FI_MAX_PENDING);
    const char *note = copies > 1 ? row_printf(row, " after %lld copies (which one was answered, "
                                               "no one can tell)", (long long)copies) : "";
    fact(c, A_ENDS, K_DNS_MATCHED, H_CLIENT_APP, 1);
    checked(c, row_ref(row, number));
    checked(c, val_str(row, "server", c->src));
    checked(c, val_float(row, "rtt_ms", rtt_ms));
    checked(c, val_int(row, "copies", copies));
    checked(c, val_str(row, "copies_note", note ? note : ""));
    checked(c, val_int(row, "upstream", upstream));
}

/* The pending queries' ids for dst from src, the first four, ", "-joined; 0 when none. */
static int waiting_ids(Cur *c, char *out, size_t size) {
    int n = 0;
    size_t used = 0;
    out[0] = 0;
    for (Query *q = map_first(&c->st->pending); q != NULL; q = map_next(q)) {
        size_t klen;
        const char *client = (const char *)map_key(q, &klen);
        const char *server = client + strlen(client) + 1;
        if (strcmp(client, c->p->dst) != 0 || strcmp(server, c->p->src) != 0)
            continue;
        if (n < 4) {
            const unsigned char *id = (const unsigned char *)map_key(q, &klen) + klen - 2;
            used += (size_t)snprintf(out + used, size - used, "%s0x%04x", n ? ", " : "",
                                     (unsigned)id[0] << 8 | id[1]);
        }
        n++;
    }
    return n;
}

/* The first pending query of dst with this id, to another server (the Python's same_id). */
static Query *same_id(Cur *c, const char **server) {
    for (Query *q = map_first(&c->st->pending); q != NULL; q = map_next(q)) {
        size_t klen;
        const char *client = (const char *)map_key(q, &klen);
        const unsigned char *id = (const unsigned char *)client + klen - 2;
        if (((unsigned)id[0] << 8 | id[1]) == c->m->qid && strcmp(client, c->p->dst) == 0) {
            *server = client + strlen(client) + 1;
            return q;
        }
    }
    return NULL;
}

static void answer_row(Cur *c) {
    DnsState *st = c->st;
    Row *row = c->row;
    Query *q = map_get_h(&st->pending, c->key, c->klen, c->khash);
    if (q != NULL && strcmp(q->question, c->question) == 0) {
        matched_row(c, q);
        return;
    }
    if (q != NULL) {
        fact(c, A_MISSING, K_DNS_QUESTION_MISMATCH, H_CLIENT_APP, 1);
        checked(c, row_ref(row, q->number));
        checked(c, val_str(row, "question", c->question));
        checked(c, val_str(row, "asked", keep(c, q->question)));
        return;
    }
    int64_t *answered = map_get_h(&st->answered, c->key, c->klen, c->khash);
    if (answered != NULL) {
        fact(c, A_MISSING, K_DNS_ALREADY_ANSWERED, H_NOBODY, 1);
        checked(c, row_ref(row, *answered));
        return;
    }
    const char *server;
    Query *other = same_id(c, &server);
    if (other != NULL) {
        fact(c, A_MISSING, K_DNS_WRONG_SOURCE, H_CLIENT_APP, 1);
        checked(c, row_ref(row, other->number));
        checked(c, val_str(row, "server", keep(c, server)));
        checked(c, val_str(row, "source", c->src));
        return;
    }
    char ids[64];
    if (waiting_ids(c, ids, sizeof ids) || map_get(&st->leg_sockets, c->dst, c->dstlen)) {
        /* a resolver's upstream socket with nothing pending on it says "none" */
        fact(c, A_MISSING, K_DNS_UNKNOWN_ID, ids[0] ? H_CLIENT_APP : H_SERVER_APP, 1);
        checked(c, val_str(row, "source", c->src));
        checked(c, val_str(row, "pending", ids[0] ? keep(c, ids) : "none"));
        return;
    }
    fact(c, A_USES, K_DNS_QUERY_UNSEEN, H_CLIENT_APP, 1);
    checked(c, val_str(row, "source", c->src));
}

/* annotate_dns._forged: a row whose answer a flood of `count` forged copies matched. */
static int forged(Row *row, int64_t count) {
    row->holders[0] = H_SERVER_APP;
    row->nholders = 1;
    if (row_also(row, K_DNS_FORGED_ACCEPTED) < 0 || row_value_int(row, "forged", count) < 0)
        return -1;
    return 0;
}

/* The content a flood is counted by: (question, answers). */
static char *content_of(Cur *c, size_t *len) {
    DnsState *st = c->st;
    st->scratch.len = 0;
    buf_put(&st->scratch, st->question.p, st->question.len + 1);
    buf_put(&st->scratch, st->answers.p, st->answers.len);
    *len = st->scratch.len;
    return st->scratch.p;
}

/* A forgery seen after the answer it matched: amend that row while it is in the window. */
static void amend_taken(Cur *c, const Taken *t, int64_t count) {
    for (int i = 0; i < ctx_window_len(c->ctx); i++) {
        Row *old = ctx_window_at(c->ctx, i);
        if (old->number == t->number && !row_shows(old, K_DNS_FORGED_ACCEPTED))
            checked(c, forged(old, count));
    }
}

/* A resolver's answer to its client (DnsAnnotator._cached's first case): a cache miss when it
 * waited for an upstream query, else a hit; the TTL its cache holds the answer for. */
static void cache_kind(Cur *c) {
    Row *row = c->row;
    Val *up = row_value(row, "upstream");
    int64_t q_up = up ? up->u.i : 0;
    row->nalso = 0;
    checked(c, row_also(row, q_up ? K_DNS_CACHE_MISS : K_DNS_CACHE_HIT));
    int64_t ttl = answer_ttl(c->st, c->m);
    checked(c, ttl < 0 ? val_none(row, "ttl") : val_int(row, "ttl", ttl));
    checked(c, val_str(row, "upstream_ref",
                       q_up ? row_printf(row, "#%lld", (long long)q_up) : ""));
    row->holders[0] = H_CLIENT_APP;
    row->holders[1] = H_SERVER_APP;
    row->nholders = 2;
}

/* An answer to a resolver's upstream socket (DnsAnnotator._cached's second case): the one it
 * took is remembered, any other counts in the flood of its content; the taken one is a forgery
 * when the flood sent the same answer, before it or after it (while its row is in the window). */
static void upstream_answer(Cur *c, const char *content, size_t clen, const char *key,
                            size_t klen) {
    DnsState *st = c->st;
    Row *row = c->row;
    if (row->kind == K_DNS_MATCHED) {
        int created;
        Taken *t = map_put(&st->taken, c->dst, c->dstlen, &created);
        char *copy = malloc(clen);
        if (t == NULL || copy == NULL) {
            free(copy);
            c->oom = 1;
            return;
        }
        if (!created)
            free(t->content);
        memcpy(copy, content, clen);
        *t = (Taken){row->number, copy, clen};
        int64_t *count = map_get(&st->flood, key, klen);
        if (count != NULL && *count)
            checked(c, forged(row, *count));
        return;
    }
    int64_t *count = map_put(&st->flood, key, klen, NULL);
    if (count == NULL) {
        c->oom = 1;
        return;
    }
    (*count)++;
    Taken *t = map_get(&st->taken, c->dst, c->dstlen);
    if (t != NULL && t->content_len == clen && memcmp(t->content, content, clen) == 0)
        amend_taken(c, t, *count);
}

/* DnsAnnotator._cached: an answer, seen as a cache's (a resolver's answer to its client, or an
 * answer to its upstream socket); a CHAOS question (version.bind) is the server's own word. */
static void cached(Cur *c) {
    if (c->m->qclass != CLASS_IN)
        return;
    if (c->row->kind == K_DNS_MATCHED && map_get(&c->st->resolvers, c->src, c->srclen)) {
        cache_kind(c);
        return;
    }
    if (!map_get(&c->st->leg_sockets, c->dst, c->dstlen))
        return;
    size_t clen;
    const char *content = content_of(c, &clen);
    Buf key = {0};  /* the flood's key: the socket, then the content */
    buf_put(&key, c->dst, c->dstlen + 1);
    buf_put(&key, content, clen);
    if (key.p == NULL) {
        c->oom = 1;
        return;
    }
    upstream_answer(c, content, clen, key.p, key.len);
    free(key.p);
}

/* DnsAnnotator.row for an answer: a relay leg's, else matched (or not), seen as a cache's. */
static void answer_or_relayed(Cur *c) {
    Row *row = c->row;
    DnsState *st = c->st;
    if (st->answers.len)
        row->summary = row_cat(row, "answer ", c->hexid, " ", c->question, " ",
                               st->rcode[c->m->rcode], " ", st->answers.p, NULL);
    else
        row->summary = row_cat(row, "answer ", c->hexid, " ", c->question, " ",
                               st->rcode[c->m->rcode], NULL);
    int64_t *leg = map_get_h(&st->legs, c->key, c->klen, c->khash);
    if (leg != NULL) {
        int64_t number = *leg;
        map_del(&st->legs, leg);
        fact(c, A_NONE, K_DNS_RELAY_ANSWER, H_PACKET, 1);
        checked(c, row_ref(row, number));
        checked(c, val_str(row, "target", c->dst));
        return;
    }
    answer_row(c);
    cached(c);
}

/* DnsAnnotator.row: fills row (proto "DNS", flow, fields dns_id, dns_response, dns_question). */
int dns_row(DnsState *st, const Pkt *p, Row *row, Ctx *ctx) {
    Msg m;
    int r = dns_read(st, p->payload, p->payload_len, &m);
    if (r < 0)
        return ctx_decline(ctx, "packet %lld: a DNS message only dnspython reads",
                           (long long)p->number);
    if (!st->names_ok)
        return ctx_decline(ctx, "packet %lld: dnspython's type names were not available",
                           (long long)p->number);
    row->proto = "DNS";
    Cur c;  /* set field by field: an initializer would clear all of key, at every packet */
    c.st = st;
    c.p = p;
    c.row = row;
    c.ctx = ctx;
    c.m = &m;
    c.oom = 0;
    if (r == 0) {
        row->summary = row_printf(row, "DNS? %zu bytes, malformed", p->payload_len);
        row->action = A_MISSING;
        row->kind = K_DNS_MALFORMED;
        row->holders[0] = H_NOBODY;
        row->nholders = 1;
        return row->summary ? 0 : ctx_decline(ctx, "packet %lld: no memory", (long long)p->number);
    }
    if (msg_texts(st, &m) < 0)
        return ctx_decline(ctx, "packet %lld: no memory", (long long)p->number);
    c.question = row_strndup(row, st->question.p, st->question.len);
    c.srclen = p->src_len;
    c.dstlen = p->dst_len;
    c.src = row_strndup(row, p->src, c.srclen);
    c.dst = row_strndup(row, p->dst, c.dstlen);
    c.klen = m.response ? key3(c.key, p->dst, c.dstlen, p->src, c.srclen, m.qid)
                        : key3(c.key, p->src, c.srclen, p->dst, c.dstlen, m.qid);
    c.khash = map_hash(c.key, c.klen);
    if (c.question == NULL || c.src == NULL || c.dst == NULL)
        c.oom = 1;
    char hexid[7];
    put_hexid(hexid, m.qid);
    c.hexid = keep(&c, hexid);
    row->flow = m.response ? row_cat(row, "dns ", p->dst, "↔", p->src, NULL)
                           : row_cat(row, "dns ", p->src, "↔", p->dst, NULL);
    checked(&c, fld_int(row, "dns_id", m.qid));
    checked(&c, fld_bool(row, "dns_response", m.response));
    checked(&c, fld_str(row, "dns_question", c.question));
    if (c.hexid == NULL || row->flow == NULL)
        c.oom = 1;
    else if (m.response)
        answer_or_relayed(&c);
    else
        query_or_relayed(&c);
    if (c.oom || row->summary == NULL)
        return ctx_decline(ctx, "packet %lld: no memory (DNS)", (long long)p->number);
    return 0;
}
