/* Reading captures for the compiled fast path, streaming through a buffered FILE (no mmap;
 * classic pcap in 4 MB chunks handed out in place):
 * wire/pcap.py read_pcap (classic pcap, both byte orders, us and ns) and its pcapng reader for a
 * single unnamed interface. Anything the Python reader would call an error is a decline here:
 * the Python path prints the rows before the error, then the error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fi_core.h"

#define SNAPLEN 262144
#define MAX_BLOCK (16u * 1024 * 1024)

static uint32_t u32(const uint8_t *p, int be) {
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
              : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static uint16_t u16(const uint8_t *p, int be) {
    return be ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[1] << 8 | p[0]);
}

static int need(Reader *r, size_t n) {
    if (n > r->cap) {
        uint8_t *b = realloc(r->buf, n);
        if (b == NULL)
            return -1;
        r->buf = b;
        r->cap = n;
    }
    return 0;
}

static int fail(Reader *r, const char *why) {
    snprintf(r->why, sizeof r->why, "%s", why);
    return -1;
}

int reader_open(Reader *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->f = fopen(path, "rb");
    if (r->f == NULL)
        return fail(r, "cannot open the file");
    setvbuf(r->f, NULL, _IOFBF, 1 << 20);
    uint8_t head[24];
    if (fread(head, 1, 24, r->f) < 24)
        return fail(r, "not a pcap file (too short)");
    uint32_t le = u32(head, 0), be = u32(head, 1);
    if (le == 0xA1B2C3D4 || le == 0xA1B23C4D || be == 0xA1B2C3D4 || be == 0xA1B23C4D) {
        r->be = !(le == 0xA1B2C3D4 || le == 0xA1B23C4D);
        r->units = u32(head, r->be) == 0xA1B23C4D ? 1e9 : 1e6;
        r->linktype = (int)(u32(head + 20, r->be) & 0xFFFF);
        return 0;
    }
    if (memcmp(head, "\x0a\x0d\x0d\x0a", 4) == 0) {
        r->pcapng = 1;
        memcpy(r->pending, head, 24);
        r->npending = 24;
        return 0;
    }
    return fail(r, "not a pcap file");
}

void reader_close(Reader *r) {
    if (r->f)
        fclose(r->f);
    free(r->buf);
    memset(r, 0, sizeof *r);
}

#define CHUNK (4u << 20)

/* The next n bytes of a classic pcap, read in big chunks (no copy per record); they stay valid
 * until the next call. *got < n only at the end of the file. */
static const uint8_t *take(Reader *r, size_t n, size_t *got) {
    if (r->clen - r->cpos < n) {
        size_t left = r->clen - r->cpos, want = n > CHUNK ? n : CHUNK;
        if (need(r, want) < 0)
            return NULL;
        memmove(r->buf, r->buf + r->cpos, left);
        r->clen = left + fread(r->buf + left, 1, r->cap - left, r->f);
        r->cpos = 0;
    }
    *got = r->clen - r->cpos < n ? r->clen - r->cpos : n;
    const uint8_t *at = r->buf + r->cpos;
    r->cpos += *got;
    return at;
}

static int pcap_next(Reader *r, Rec *rec) {
    size_t got;
    const uint8_t *rh = take(r, 16, &got);
    if (rh == NULL)
        return fail(r, "no memory");
    if (got == 0)
        return 0;
    if (got < 16)
        return fail(r, "the file ends inside a record header");
    uint32_t sec = u32(rh, r->be), frac = u32(rh + 4, r->be);
    uint32_t caplen = u32(rh + 8, r->be), orig = u32(rh + 12, r->be);
    if (caplen > SNAPLEN * 4)
        return fail(r, "a corrupt record");
    const uint8_t *data = take(r, caplen, &got);
    if (data == NULL)
        return fail(r, "no memory");
    if (got < caplen)
        return fail(r, "the file ends inside a record");
    rec->time = (double)sec + (double)frac / r->units;  /* sec + frac / divisor */
    rec->linktype = r->linktype;
    rec->data = data;
    rec->caplen = caplen;
    rec->orig_len = orig;
    return 1;
}

/* One IDB: its link type, snaplen, if_tsresol; a second interface or a name: declined. */
static int pcapng_idb(Reader *r, const uint8_t *body, size_t n) {
    if (n < 8)
        return fail(r, "a corrupt interface block");
    if (r->nifaces++ > 0)
        return fail(r, "pcapng with several interfaces");
    r->linktype = u16(body, r->be);
    r->snaplen = u32(body + 4, r->be);
    r->units = 1e6;
    size_t i = 8;
    while (i + 4 <= n) {
        unsigned code = u16(body + i, r->be), len = u16(body + i + 2, r->be);
        if (code == 0)
            break;
        if (code == 2)
            return fail(r, "pcapng interface with a name (capture points)");
        if (code == 9 && len > 0 && i + 4 < n) {
            unsigned v = body[i + 4];
            double u = 1;
            for (unsigned k = 0; k < (v & 0x7F); k++)
                u *= (v & 0x80) ? 2.0 : 10.0;
            if ((v & 0x7F) > 22 && !(v & 0x80))
                return fail(r, "an unusual if_tsresol");
            r->units = u;
        }
        i += 4 + len + ((4 - len % 4) % 4);
    }
    return 0;
}

static int pcapng_packet(Reader *r, uint32_t type, const uint8_t *body, size_t n, Rec *rec) {
    if (type == 3) {  /* Simple Packet Block */
        if (r->nifaces == 0 || n < 4)
            return fail(r, "a corrupt simple packet block");
        uint32_t orig = u32(body, r->be);
        size_t cap = orig;
        if (r->snaplen && r->snaplen < cap)
            cap = r->snaplen;
        if (n - 4 < cap)
            cap = n - 4;
        rec->time = 0.0;
        rec->data = body + 4;
        rec->caplen = cap;
        rec->orig_len = orig;
        rec->linktype = r->linktype;
        return 1;
    }
    size_t size = 20;
    if (n < size)
        return fail(r, "a corrupt packet block");
    uint32_t iface = type == 6 ? u32(body, r->be) : u16(body, r->be);
    uint32_t high = u32(body + 4, r->be), low = u32(body + 8, r->be);
    uint32_t cap = u32(body + 12, r->be), orig = u32(body + 16, r->be);
    if (iface >= (uint32_t)r->nifaces)
        return fail(r, "a packet names an interface never described");
    if (n - size < cap)
        return fail(r, "a corrupt packet block");
    rec->time = (double)(((uint64_t)high << 32) | low) / r->units;
    rec->data = body + size;
    rec->caplen = cap;
    rec->orig_len = orig;
    rec->linktype = r->linktype;
    return 1;
}

static int pcapng_next(Reader *r, Rec *rec) {
    for (;;) {
        uint8_t hdr[12];
        size_t have = r->npending < 12 ? r->npending : 12;
        memcpy(hdr, r->pending, have);
        if (have < 8) {
            have += fread(hdr + have, 1, 8 - have, r->f);
            if (have == 0)
                return 0;
            if (have < 8)
                return fail(r, "the file ends inside a block header");
        }
        if (memcmp(hdr, "\x0a\x0d\x0d\x0a", 4) == 0) {
            if (have < 12)
                have += fread(hdr + have, 1, 12 - have, r->f);
            if (have < 12 || (memcmp(hdr + 8, "\x4d\x3c\x2b\x1a", 4) &&
                              memcmp(hdr + 8, "\x1a\x2b\x3c\x4d", 4)))
                return fail(r, "a corrupt section header");
            r->be = memcmp(hdr + 8, "\x1a\x2b\x3c\x4d", 4) == 0;
            if (r->sections++ > 0)
                return fail(r, "pcapng with several sections");
        }
        uint32_t type = u32(hdr, r->be), blen = u32(hdr + 4, r->be);
        if (blen < 12 || blen % 4 || blen > MAX_BLOCK || (type == 0x0A0D0D0A && blen < 28))
            return fail(r, "a corrupt block");
        if (need(r, blen) < 0)
            return fail(r, "no memory");
        size_t pre = r->npending > have ? r->npending : have;
        memcpy(r->buf, r->npending > have ? r->pending : hdr, pre);
        r->npending = 0;
        if (pre > blen)
            return fail(r, "a corrupt block");
        if (fread(r->buf + pre, 1, blen - pre, r->f) < blen - pre)
            return fail(r, "the file ends inside a block");
        if (u32(r->buf + blen - 4, r->be) != blen)
            return fail(r, "a corrupt block (lengths differ)");
        const uint8_t *body = r->buf + 8;
        size_t n = blen - 12;
        if (type == 1) {
            if (pcapng_idb(r, body, n) < 0)
                return -1;
        } else if (type == 6 || type == 2 || type == 3) {
            return pcapng_packet(r, type, body, n, rec);
        }
    }
}

int reader_next(Reader *r, Rec *rec) { return r->pcapng ? pcapng_next(r, rec) : pcap_next(r, rec); }
