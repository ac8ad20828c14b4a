/* What the compiled fast path prints for a row: facts.render (the sentence, from the templates
 * Python hands in), table.format_row / header / wrap, and table.row_json. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fi_out.h"

/* buf_puts of a string literal, its length known when compiling */
#define BUF_LIT(b, lit) buf_put((b), (lit), sizeof(lit) - 1)

/* ---- templates: str.format_map's syntax, the subset facts.TEMPLATES uses ---------------- */

enum { SPECIAL_NONE, SPECIAL_KEY, SPECIAL_REFS, SPECIAL_REF, SPECIAL_MOVES };

/* The names facts.render fills from the Fact itself rather than its values */
static int special_of(const char *name) {
    static const char *const names[] = {"key", "refs", "ref", "moves"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return SPECIAL_KEY + i;
    return SPECIAL_NONE;
}

static int parse_field(const char *f, size_t n, TSeg *seg) {
    const char *colon = memchr(f, ':', n);
    size_t namelen = colon ? (size_t)(colon - f) : n;
    if (namelen == 0 || namelen >= sizeof seg->name)
        return -1;
    for (size_t i = 0; i < namelen; i++) {
        char c = f[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9')))
            return -1;  /* attribute, index or conversion: not here */
    }
    memcpy(seg->name, f, namelen);
    seg->name[namelen] = 0;
    seg->special = special_of(seg->name);
    size_t speclen = colon ? n - namelen - 1 : 0;
    if (speclen >= sizeof seg->spec)
        return -1;
    memcpy(seg->spec, colon ? colon + 1 : "", speclen);
    seg->spec[speclen] = 0;
    seg->field = 1;
    return 0;
}

/* Split a template into literal text and {name:spec} fields; -1 for syntax it does not read */
int tmpl_compile(Tmpl *t, const char *text) {
    memset(t, 0, sizeof *t);
    size_t n = strlen(text);
    t->text = malloc(n + 1);
    t->segs = calloc(n + 1, sizeof *t->segs);
    if (t->text == NULL || t->segs == NULL)
        return -1;
    size_t out = 0, i = 0;
    while (i < n) {
        TSeg *seg = &t->segs[t->nsegs];
        if (text[i] == '{' && text[i + 1] != '{') {
            const char *close = strchr(text + i, '}');
            const char *nested = memchr(text + i + 1, '{', close ? (size_t)(close - text - i - 1)
                                                                  : 0);
            if (close == NULL || nested != NULL ||
                parse_field(text + i + 1, (size_t)(close - text - i - 1), seg) < 0)
                return -1;
            t->nsegs++;
            i = (size_t)(close - text) + 1;
            continue;
        }
        seg->lit = t->text + out;
        while (i < n && !(text[i] == '{' && text[i + 1] != '{')) {
            if ((text[i] == '{' || text[i] == '}') && text[i + 1] == text[i])
                i++;
            else if (text[i] == '}')
                return -1;
            t->text[out++] = text[i++];
        }
        seg->litlen = (size_t)(t->text + out - seg->lit);
        t->nsegs++;
    }
    t->ok = 1;
    return 0;
}

void tmpl_free(Tmpl *t) {
    free(t->text);
    free(t->segs);
    memset(t, 0, sizeof *t);
}

/* "%llx" of v; its length */
static size_t fmt_hex(char *out, uint64_t v) {
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    size_t k = 0;
    do {
        tmp[k++] = digits[v & 15];
        v >>= 4;
    } while (v);
    for (size_t i = 0; i < k; i++)
        out[i] = tmp[k - 1 - i];
    return k;
}

/* format(x, ".Nf"): ".0f" of 0 <= x < 2**53 is x rounded half to even (nearbyint rounds the
 * double's exact value, as printf does), ".3f" is buf_fixed3; the rest printf */
static int fixed(Buf *b, double x, int prec) {
    if (prec == 0 && !signbit(x) && x < 9007199254740992.0)
        return buf_i64(b, (int64_t)nearbyint(x));
    if (prec == 3)
        return buf_fixed3(b, x);
    return buf_printf(b, "%.*f", prec, x);
}

/* format(value, spec) for the specs the templates use: "", ".Nf", "#0Nx", "d"; b NULL: only
 * whether it can */
static int format_val(Buf *b, const Val *v, const char *spec) {
    if (spec[0] == 0) {
        if (b == NULL)
            return v->type <= V_STR ? 0 : -1;
        switch (v->type) {
        case V_NONE: return buf_puts(b, "None");
        case V_BOOL: return buf_puts(b, v->u.i ? "True" : "False");
        case V_INT: return buf_i64(b, v->u.i);
        case V_FLOAT: return buf_repr_float(b, v->u.f);
        case V_STR: return buf_puts(b, v->u.s);
        }
        return -1;
    }
    size_t sl = strlen(spec);
    if (spec[0] == '.' && spec[sl - 1] == 'f' && sl <= 4 && (v->type == V_FLOAT ||
                                                              v->type == V_INT)) {
        int prec = atoi(spec + 1);
        double x = v->type == V_FLOAT ? v->u.f : (double)v->u.i;
        if (x != x || x - x != 0)
            return -1;  /* nan, inf */
        return b ? fixed(b, x, prec) : 0;
    }
    if (strcmp(spec, "d") == 0 && v->type == V_INT)
        return b ? buf_i64(b, v->u.i) : 0;
    if (spec[0] == '#' && spec[sl - 1] == 'x' && v->type == V_INT && v->u.i >= 0) {
        if (b == NULL)
            return 0;
        int zero = spec[1] == '0';
        int width = atoi(spec + 1 + zero);
        char hex[32];
        int k = (int)fmt_hex(hex, (uint64_t)v->u.i);
        int pad = width - 2 - k;
        if (pad > 0 && !zero)
            buf_pad(b, (size_t)pad);
        buf_put(b, "0x", 2);
        for (; zero && pad > 0; pad--)
            buf_put(b, "0", 1);
        return buf_put(b, hex, (size_t)k);
    }
    return -1;
}

static int moves_value(Buf *b, const Row *row) {  /* facts._moves */
    for (int i = 0; i < row->nvalues; i++)
        if (str_eq(row->values[i].name, "states_known") &&
            row->values[i].type == V_BOOL && !row->values[i].u.i)
            return buf_puts(b, " [states unknown: the handshake is not in this capture; "
                               "client and server are guessed from the ports]");
    for (int i = 0; i < row->nmoves; i++)
    {
        int old = row->moves[i].old, new_ = row->moves[i].new_;
        buf_puts(b, i ? "; " : " [");
        buf_puts(b, tcp_role_name(row->moves[i].role));
        BUF_LIT(b, " ");
        buf_put(b, tcp_state_name(old), tcp_state_len(old));
        BUF_LIT(b, "→");
        buf_put(b, tcp_state_name(new_), tcp_state_len(new_));
    }
    return row->nmoves ? buf_puts(b, "]") : 0;
}

static int special_value(Buf *b, const Row *row, int special) {
    if (b == NULL)
        return special == SPECIAL_NONE ? -1 : 0;
    switch (special) {
    case SPECIAL_KEY:
        return buf_puts(b, row->key ? row->key : "");
    case SPECIAL_REFS:
        for (int i = 0; i < row->nrefs; i++)
            buf_puts(b, i ? ", #" : "#"), buf_i64(b, row->refs[i]);
        return 0;
    case SPECIAL_REF:
        return row->nrefs ? (buf_put(b, "#", 1), buf_i64(b, row->refs[0])) : 0;
    case SPECIAL_MOVES:
        return moves_value(b, row);
    }
    return -1;
}

/* The value a template's field names: at the index where it was found last when the name is
 * that very string (a row has each name once: put() and fresh_val), else by a search */
static const Val *lookup(const Row *row, TSeg *seg) {
    int h = seg->hint;
    if (h < row->nvalues && row->values[h].name == seg->hint_name)
        return &row->values[h];
    for (int i = 0; i < row->nvalues; i++)
        if (str_eq(row->values[i].name, seg->name)) {
            seg->hint = i;
            seg->hint_name = row->values[i].name;
            return &row->values[i];
        }
    return NULL;
}

/* facts.render: the row's sentence (and each `also` fact's after it), "; "-joined; b NULL:
 * only whether it can be made (the pre-scan) */
int render(Buf *b, const Out *o, const Row *row) {
    for (int t = 0; t <= row->nalso; t++) {
        const Tmpl *tm = &o->tmpl[t == 0 ? row->kind : row->also[t - 1]];
        if (!tm->ok)
            return -1;
        if (t > 0 && b)
            buf_put(b, "; ", 2);
        for (int s = 0; s < tm->nsegs; s++) {
            TSeg *seg = &tm->segs[s];  /* the pointer is const, not its segments */
            if (!seg->field) {
                if (b)
                    buf_put(b, seg->lit, seg->litlen);
                continue;
            }
            const Val *v = lookup(row, seg);
#ifdef FI_CHECK_DUPS
            for (int i = 0; i < row->nvalues; i++)
                for (int j = 0; j < i; j++)
                    if (str_eq(row->values[i].name, row->values[j].name))
                        abort();
#endif
            int r = v ? format_val(b, v, seg->spec)
                      : seg->spec[0] ? -1 : special_value(b, row, seg->special);
            if (r < 0)
                return -1;
        }
    }
    return 0;
}

/* ---- the table ------------------------------------------------------------------------- */

/* table.wrap into at most max lines (-1 when more) */
static int wrap(const char *text, size_t n, int width, Slice *out, int max) {
    Wrapper wr;
    Slice line;
    int k = 0;
    wrap_start(&wr, text, n, width);
    while (wrap_next(&wr, &line)) {
        if (k >= max)
            return -1;
        out[k++] = line;
    }
    return k;
}

/* s (len code points) left-justified to width */
static int put_ljust_cp(Buf *b, const char *s, size_t n, size_t len, int width) {
    buf_put(b, s, n);
    return len < (size_t)width ? buf_pad(b, (size_t)width - len) : 0;
}

static int put_ljust(Buf *b, const char *s, size_t n, int width) {
    return put_ljust_cp(b, s, n, cp_len(s, n), width);
}

/* put_ljust_cp at o, in room reserved for n + width bytes; returns the end */
static inline char *ljust_at(char *o, const char *s, size_t n, size_t len, int width) {
    memcpy(o, s, n);
    o += n;
    if (len < (size_t)width) {
        memset(o, ' ', (size_t)width - len);
        o += (size_t)width - len;
    }
    return o;
}

/* str.rstrip() of the buffer from `from` (ASCII whitespace and U+0085, U+00A0) */
static void rstrip(Buf *b, size_t from) {
    while (b->len > from) {
        unsigned char c = (unsigned char)b->p[b->len - 1];
        if (c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x1F)) {
            b->len--;
        } else if ((c == 0x85 || c == 0xA0) && b->len - from >= 2 &&
                   (unsigned char)b->p[b->len - 2] == 0xC2) {
            b->len -= 2;
        } else {
            break;
        }
    }
    b->p[b->len] = 0;
}

/* table.format_row's lines of the state under the row: 8 spaces, the line, a newline */
static int state_lines(Buf *out, const Slice *state, int nstate) {
    for (int i = 0; i < nstate; i++) {
        if (buf_reserve(out, state[i].n + 9) < 0)
            return -1;
        char *o = out->p + out->len;
        memset(o, ' ', 8);
        memcpy(o + 8, state[i].p, state[i].n);
        o[8 + state[i].n] = '\n';
        out->len += state[i].n + 9;
    }
    out->p[out->len] = 0;
    return 0;
}

/* the number and time cells (the first line's), each padded to its width, "  " between */
static int number_time(Buf *out, const Out *o, const Row *row) {
    char num[24];
    size_t k = fmt_i64(num, row->number);
    if (buf_reserve(out, k + (size_t)o->widths[0] + 2) < 0)
        return -1;
    char *p = ljust_at(out->p + out->len, num, k, k, o->widths[0]);
    memcpy(p, "  ", 2);
    out->len = (size_t)(p + 2 - out->p);
    size_t at = out->len;
    if (buf_fixed3(out, row->time) < 0)
        return -1;
    size_t len = out->len - at;
    return len < (size_t)o->widths[1] ? buf_pad(out, (size_t)o->widths[1] - len) : 0;
}

#define MAXLINES 256

static int wrapped_row(Buf *out, const Out *o, const Row *row, Slice route, Slice summary,
                       Slice *state, int nstate) {
    const int *w = o->widths;
    Slice cells[6][MAXLINES];
    int h[6] = {1, 1};
    h[2] = wrap(route.p, route.n, w[2], cells[2], MAXLINES);
    h[3] = 1;
    cells[3][0] = (Slice){row->proto, strlen(row->proto)};
    h[4] = wrap(summary.p, summary.n, w[4], cells[4], MAXLINES);
    if (h[2] < 0 || h[4] < 0)
        return -1;
    for (int c = 2; c <= 4; c += 2)
        if (h[c] == 0)
            cells[c][0] = (Slice){"", 0}, h[c] = 1;
    int ncols = 5, height = 0;
    if (o->beside) {
        for (int i = 0; i < nstate; i++)
            cells[5][i] = state[i];
        h[5] = nstate ? nstate : 1;
        if (!nstate)
            cells[5][0] = (Slice){"", 0};
        ncols = 6;
    }
    for (int c = 0; c < ncols; c++)
        height = h[c] > height ? h[c] : height;
    for (int i = 0; i < height; i++) {
        size_t start = out->len;
        if (i == 0 && number_time(out, o, row) < 0)
            return -1;
        for (int c = i == 0 ? 2 : 0; c < ncols; c++) {
            if (c)
                buf_put(out, "  ", 2);
            Slice s = i < h[c] ? cells[c][i] : (Slice){"", 0};
            put_ljust(out, s.p, s.n, c < ncols - 1 ? w[c] : 0);  /* the last: rstrip's */
        }
        rstrip(out, start);
        buf_put(out, "\n", 1);
    }
    return o->beside ? 0 : state_lines(out, state, nstate);
}

/* table.format_row's line when no cell wraps. The last cell is not padded: rstrip would take
 * the padding off again */
static int one_line(Buf *out, const Out *o, const Row *row, Slice route, size_t route_cp,
                    Slice summary, size_t summary_cp, const Slice *state, int nstate) {
    const int *w = o->widths;
    size_t start = out->len, proto_n = strlen(row->proto);
    if (number_time(out, o, row) < 0)
        return -1;
    Slice last = o->beside && nstate ? state[0] : (Slice){"", 0};
    if (buf_reserve(out, route.n + proto_n + summary.n + last.n + (size_t)(w[2] + w[3] + w[4]) +
                             10) < 0)  /* 4 "  ", "\n" */
        return -1;
    char *p = memcpy(out->p + out->len, "  ", 2);
    p = ljust_at(p + 2, route.p, route.n, route_cp, w[2]);
    p = ljust_at(memcpy(p, "  ", 2) + 2, row->proto, proto_n, cp_len(row->proto, proto_n),
                 w[3]);
    p = ljust_at(memcpy(p, "  ", 2) + 2, summary.p, summary.n, summary_cp,
                 o->beside ? w[4] : 0);
    if (o->beside) {
        memcpy(p, "  ", 2);
        memcpy(p + 2, last.p, last.n);
        p += 2 + last.n;
    }
    out->len = (size_t)(p - out->p);
    rstrip(out, start);
    out->p[out->len++] = '\n';
    out->p[out->len] = 0;
    return o->beside ? 0 : state_lines(out, state, nstate);
}

/* table.format_row, with its newline */
int format_row(Buf *out, Out *o, const Row *row) {
    const int *w = o->widths;
    Buf *t = &o->scratch;
    t->len = 0;
    if (row->action != A_NONE) {
        buf_puts(t, o->actions[row->action]);
        buf_put(t, ": ", 2);
    }
    if (render(t, o, row) < 0)
        return -1;
    size_t where_len = t->len;
    size_t route_at = t->len;
    buf_put(t, row->src, row->src_len);
    buf_put(t, " → ", sizeof " → " - 1);
    buf_put(t, row->dst, row->dst_len);
    Slice route = {t->p + route_at, t->len - route_at};
    Slice summary = {row->summary, strlen(row->summary)};
    Slice state[MAXLINES];
    int nstate = wrap(t->p, where_len, o->state_width, state, MAXLINES);
    if (nstate < 0)
        return -1;
    size_t route_cp = cp_len(route.p, route.n), summary_cp = cp_len(summary.p, summary.n);
    if (o->state_width >= 0 && (route_cp > (size_t)w[2] || summary_cp > (size_t)w[4] ||
                                (o->beside && nstate > 1)))
        return wrapped_row(out, o, row, route, summary, state, nstate);
    return one_line(out, o, row, route, route_cp, summary, summary_cp, state, nstate);
}

/* table.header, with its newline */
int format_header(Buf *out, const Out *o) {
    static const char *const cols[] = {"#", "time", "source → destination", "proto", "summary"};
    size_t start = out->len;
    for (int i = 0; i < 5; i++) {
        if (i)
            buf_put(out, "  ", 2);
        put_ljust(out, cols[i], strlen(cols[i]), o->widths[i]);
    }
    if (o->beside) {
        buf_puts(out, "  where state lives\n");
    } else {
        rstrip(out, start);
        buf_puts(out, "\n        where state lives (under each packet)\n");
    }
    for (int i = 0; i < 5; i++) {
        if (i)
            buf_put(out, "  ", 2);
        for (int k = 0; k < o->widths[i]; k++)
            buf_put(out, "-", 1);
    }
    if (o->beside) {
        int n = o->state_width > 0 ? o->state_width : (int)strlen("where state lives");
        buf_put(out, "  ", 2);
        for (int k = 0; k < n; k++)
            buf_put(out, "-", 1);
    }
    return buf_put(out, "\n", 1);
}

/* ---- JSON ------------------------------------------------------------------------------ */

static int json_val(Buf *b, const Val *v) {
    switch (v->type) {
    case V_NONE: return BUF_LIT(b, "null");
    case V_BOOL: return buf_puts(b, v->u.i ? "true" : "false");
    case V_INT: return buf_i64(b, v->u.i);
    case V_FLOAT: return buf_repr_float(b, v->u.f);
    case V_STR: return buf_json_str(b, v->u.s);
    }
    return -1;
}

static void json_key(Buf *b, const char *k, int *first) {
    if (!*first)
        buf_put(b, ", ", 2);
    *first = 0;
    buf_json_str(b, k);
    buf_put(b, ": ", 2);
}

/* The common fields (annotate.Annotator._annotate), in their order, and their keys as
 * json_key writes them after the first (plain names: nothing to escape) */
static const char *const COMMON[8] = {"length", "sport", "dport", "tcp_seq", "tcp_ack",
                                      "tcp_flags", "icmp_type", "icmp_code"};
#define KEY(name) {", \"" name "\": ", sizeof(", \"" name "\": ") - 1}
static const Slice COMMON_KEYS[8] = {KEY("length"), KEY("sport"), KEY("dport"), KEY("tcp_seq"),
                                     KEY("tcp_ack"), KEY("tcp_flags"), KEY("icmp_type"),
                                     KEY("icmp_code")};
#undef KEY

/* The index in COMMON of a name, or -1: its first bytes pick the one candidate to compare */
static int common_of(const char *name) {
    int i = -1;
    switch (name[0]) {
    case 'l': i = 0; break;
    case 's': i = 1; break;
    case 'd': i = 2; break;
    case 't':
        if (name[1] == 'c' && name[2] == 'p' && name[3] == '_')
            i = name[4] == 's' ? 3 : name[4] == 'a' ? 4 : 5;
        break;
    case 'i':
        if (name[1] == 'c' && name[2] == 'm' && name[3] == 'p' && name[4] == '_')
            i = name[5] == 't' ? 6 : 7;
        break;
    }
    return i >= 0 && str_eq(name, COMMON[i]) ? i : -1;
}

/* The common fields, each replaced by the last of the part's own with its name, then the
 * part's others in order (a dict's update) */
static void json_fields(Buf *b, const Row *row) {
    int tcp = row->has_tcp != 0, icmp = row->icmp_type >= 0;
    const int present[8] = {1, 1, 1, tcp, tcp, tcp, icmp, icmp};
    Val common[8] = {
        {"length", V_INT, {.i = row->length}},
        {"sport", row->sport < 0 ? V_NONE : V_INT, {.i = row->sport}},
        {"dport", row->dport < 0 ? V_NONE : V_INT, {.i = row->dport}},
        {"tcp_seq", V_INT, {.i = row->tcp_seq}},
        {"tcp_ack", V_INT, {.i = row->tcp_ack}},
        {"tcp_flags", V_INT, {.i = row->tcp_flags}},
        {"icmp_type", V_INT, {.i = row->icmp_type}},
        {"icmp_code", V_INT, {.i = row->icmp_code}},
    };
    const Val *v[8];
    int own[FI_MAX_FIELDS], nown = 0, first = 1;
    for (int i = 0; i < 8; i++)
        v[i] = &common[i];
    for (int j = 0; j < row->nfields; j++) {
        int c = common_of(row->fields[j].name);
        if (c >= 0 && present[c])
            v[c] = &row->fields[j];
        else
            own[nown++] = j;
    }
    buf_put(b, "{", 1);
    for (int i = 0; i < 8; i++)
        if (present[i]) {
            size_t skip = first ? 2 : 0;  /* the first key has no ", " */
            buf_put(b, COMMON_KEYS[i].p + skip, COMMON_KEYS[i].n - skip);
            first = 0;
            json_val(b, v[i]);
        }
    for (int k = 0; k < nown; k++) {
        json_key(b, row->fields[own[k]].name, &first);
        json_val(b, &row->fields[own[k]]);
    }
    buf_put(b, "}", 1);
}

/* repr(round(t, 6)). round's text, "%.6f" correctly rounded, has at most 15 significant digits
 * for 0 <= t < 1e9, so the double it reads as prints back as that text without its trailing
 * zeros (repr is the shortest text that reads back); below 1e-4 repr turns to 1e-05 notation. */
static int repr_round6(Buf *b, double t) {
    if ((t == 0 || t >= 1e-4) && t < 1e9 && !signbit(t)) {
        size_t at = b->len;
        if (buf_fixed(b, t, 6) < 0)  /* round(t, 6)'s text */
            return -1;
        while (b->p[b->len - 1] == '0')
            b->len--;
        b->p[b->len] = 0;
        return b->p[b->len - 1] == '.' && b->len > at ? buf_put(b, "0", 1) : 0;
    }
    char *s = PyOS_double_to_string(t, 'f', 6, 0, NULL);  /* round(t, 6) */
    if (s == NULL)
        return -1;
    double rounded = PyOS_string_to_double(s, NULL, NULL);
    PyMem_Free(s);
    if (rounded == -1.0 && PyErr_Occurred())
        return -1;
    return buf_repr_float(b, rounded);
}

/* table.row_json, with its newline */
/* each name's JSON text, for format_json: made once per run instead of escaped per row */
int out_json_names(Out *o) {
    struct { const char *const *names; Slice *texts; int n; } sets[] = {
        {o->kinds, o->json_kinds, K__COUNT}, {o->holders, o->json_holders, H__COUNT},
        {o->actions, o->json_actions, A__COUNT}};
    Buf *b = &o->json_names;
    size_t at[K__COUNT + H__COUNT + A__COUNT + 1];
    int k = 0;
    for (int s = 0; s < 3; s++)  /* offsets first: the buffer moves as it grows */
        for (int i = 0; i < sets[s].n; i++) {
            at[k++] = b->len;
            if (buf_json_str(b, sets[s].names[i]) < 0)
                return -1;
        }
    at[k] = b->len;
    k = 0;
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < sets[s].n; i++, k++)
            sets[s].texts[i] = (Slice){b->p + at[k], at[k + 1] - at[k]};
    return 0;
}

int format_json(Buf *b, Out *o, const Row *row) {
    Buf *t = &o->scratch;
    t->len = 0;
    if (render(t, o, row) < 0)
        return -1;
    BUF_LIT(b, "{\"number\": ");
    buf_i64(b, row->number);
    BUF_LIT(b, ", \"time\": ");
    if (repr_round6(b, row->time) < 0)
        return -1;
    BUF_LIT(b, ", \"src\": ");
    buf_json_strn(b, row->src, row->src_len);
    BUF_LIT(b, ", \"dst\": ");
    buf_json_strn(b, row->dst, row->dst_len);
    BUF_LIT(b, ", \"proto\": ");
    buf_json_str(b, row->proto);
    BUF_LIT(b, ", \"summary\": ");
    buf_json_str(b, row->summary);
    BUF_LIT(b, ", \"action\": ");
    buf_put(b, o->json_actions[row->action].p, o->json_actions[row->action].n);
    BUF_LIT(b, ", \"holders\": [");
    for (int i = 0; i < row->nholders; i++) {
        if (i)
            buf_put(b, ", ", 2);
        buf_put(b, o->json_holders[row->holders[i]].p, o->json_holders[row->holders[i]].n);
    }
    BUF_LIT(b, "], \"state\": ");
    buf_json_strn(b, t->p, t->len);
    BUF_LIT(b, ", \"flow\": ");
    buf_i64(b, row->flow_number);
    BUF_LIT(b, ", \"fact\": ");
    buf_put(b, o->json_kinds[row->kind].p, o->json_kinds[row->kind].n);
    BUF_LIT(b, ", \"refs\": [");
    for (int i = 0; i < row->nrefs; i++)
        buf_puts(b, i ? ", " : ""), buf_i64(b, row->refs[i]);
    BUF_LIT(b, "], \"also\": [");
    for (int i = 0; i < row->nalso; i++) {
        if (i)
            buf_put(b, ", ", 2);
        buf_put(b, o->json_kinds[row->also[i]].p, o->json_kinds[row->also[i]].n);
    }
    BUF_LIT(b, "], \"fields\": ");
    json_fields(b, row);
    return BUF_LIT(b, "}\n");
}
