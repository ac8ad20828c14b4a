#define _POSIX_C_SOURCE 200809L
/* Decoding one frame for the compiled fast path: wire/packets.py decode, for the frames it
 * decodes without an error (an error row, ICMP, IPv6 extension headers: declined). */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fi_core.h"

static int no(char *why, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return -1;
}

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }
static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* packets._link: the ethertype (0x0800/0x86DD only) and the IP header's offset */
static int link_layer(const Rec *rec, size_t *off, int *v6) {
    const uint8_t *d = rec->data;
    size_t n = rec->caplen;
    unsigned et;
    switch (rec->linktype) {
    case 1:
        if (n < 14)
            return -1;
        et = be16(d + 12);
        *off = 14;
        while (et == 0x8100 || et == 0x88A8) {
            if (n < *off + 4)
                return -1;
            et = be16(d + *off + 2);
            *off += 4;
        }
        break;
    case 101: case 12: case 14: case 228: case 229:
        if (n == 0)
            return -1;
        et = (d[0] >> 4) == 4 ? 0x0800 : 0x86DD;
        *off = 0;
        break;
    case 0: {
        if (n < 4)
            return -1;
        uint32_t fam = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 |
                       (uint32_t)d[3] << 24;
        if (fam > 0xFFFF)
            fam = be32(d);
        et = fam == 2 ? 0x0800 : (fam == 10 || fam == 24 || fam == 28 || fam == 30) ? 0x86DD : 0;
        *off = 4;
        break;
    }
    case 113:
        if (n < 16)
            return -1;
        et = be16(d + 14);
        *off = 16;
        break;
    case 276:
        if (n < 20)
            return -1;
        et = be16(d);
        *off = 20;
        break;
    default:
        return -1;
    }
    if (et != 0x0800 && et != 0x86DD)
        return -1;
    *v6 = et == 0x86DD;
    return 0;
}

/* Decoded.endpoint: "10.0.0.1:53", "[2001:db8::1]:53" (host is hlen bytes); its length */
static size_t endpoint(char *out, const char *host, size_t hlen, int v6, int port) {
    size_t k = 0;
    if (v6)
        out[k++] = '[';
    memcpy(out + k, host, hlen);
    k += hlen;
    if (v6)
        out[k++] = ']';
    if (port >= 0) {
        out[k++] = ':';
        k += fmt_u64(out + k, (uint64_t)port);
    }
    out[k] = 0;
    return k;
}

/* str(v) of a byte into out; its length */
static size_t byte_text(char *out, unsigned v) {
    size_t k = 0;
    if (v >= 100)
        out[k++] = (char)('0' + v / 100);
    if (v >= 10)
        out[k++] = (char)('0' + v / 10 % 10);
    out[k++] = (char)('0' + v % 10);
    return k;
}

/* socket.inet_ntoa; its length */
static size_t ip4_text(const uint8_t *a, char *out) {
    size_t k = 0;
    for (int i = 0; i < 4; i++) {
        k += byte_text(out + k, a[i]);
        out[k++] = '.';
    }
    out[k - 1] = 0;
    return k - 1;
}

/* A capture names the same few endpoints again and again: their texts are memoised in the
 * caller's direct-mapped table (EpMemo, fi_core.h), of a pure function: what it holds never
 * changes what is printed. */

/* Decoded.endpoint for an IPv4 address and port (-1: none) into out; its length */
static size_t ep4_text(EpMemo *memo, char *out, const uint8_t *a, int port) {
    uint64_t key = ((uint64_t)be32(a) << 17 | (uint64_t)(port + 1)) + 1;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ULL) >> 56);
    if (memo[i].key == key) {
        memcpy(out, memo[i].text, sizeof memo[i].text);
        return memo[i].len;
    }
    char host[16];
    size_t n = endpoint(out, host, ip4_text(a, host), 0, port);
    memo[i].key = key;
    memo[i].len = (uint8_t)n;
    memcpy(memo[i].text, out, n + 1);
    return n;
}

/* str(ipaddress.IPv6Address): inet_ntop's RFC 5952 text, except the dotted forms it uses for
 * IPv4-mapped/compatible addresses (Python 3.11 prints hex there): declined. */
static int ip6_text(const uint8_t *a, char *out) {
    if (inet_ntop(AF_INET6, a, out, INET6_ADDRSTRLEN) == NULL || strchr(out, '.'))
        return -1;
    return 0;
}

/* "host:port" of a quoted datagram (Python's f"{q.src}:{q.sport}": no brackets, "None") */
static void quoted_end(char *out, const char *host, int port) {
    Sb b;
    sb_init(&b);
    sb_s(&b, host);
    sb_put(&b, ":", 1);
    if (port < 0)
        sb_s(&b, "None");
    else
        sb_i(&b, port);
    memcpy(out, b.p, b.n + 1);
}

/* packets._ip with inside_error: the datagram an ICMP error quotes (RFC 792, RFC 4443); 0 and
 * has_quoted unset when its addresses cannot be read */
static int quoted(const uint8_t *d, size_t n, Pkt *p) {
    char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
    int version = n ? d[0] >> 4 : 0, proto, sport = -1, dport = -1;
    size_t l4off, end;
    if (version == 4 && n >= 20) {
        size_t ihl = (size_t)(d[0] & 0x0F) * 4, total = be16(d + 2);
        proto = d[9];
        ip4_text(d + 12, src);
        ip4_text(d + 16, dst);
        if (be16(d + 6) & 0x1FFF)
            goto done;
        end = total >= ihl ? (n < total ? n : total) : n;
        l4off = ihl;
    } else if (version == 6 && n >= 40) {
        proto = d[6];
        if (ip6_text(d + 8, src) < 0 || ip6_text(d + 24, dst) < 0 || proto == 0 || proto == 43 ||
            proto == 60)
            return -1;
        l4off = 40;
        size_t plen = be16(d + 4);
        end = n < 40 + plen ? n : 40 + plen;
    } else {
        return 0;
    }
    size_t segn = end > l4off ? end - l4off : 0;
    if ((proto == FI_PROTO_UDP && segn >= 8) || (proto == FI_PROTO_TCP && segn >= 20)) {
        sport = (int)be16(d + l4off);
        dport = (int)be16(d + l4off + 2);
    }
done:
    p->has_quoted = 1;
    quoted_end(p->quoted_origin, src, sport);
    quoted_end(p->quoted_target, dst, dport);
    return 0;
}

static int icmp(const uint8_t *seg, size_t n, int proto, Pkt *p, char *why, size_t nw) {
    if (n < 4)
        return no(why, nw, "packet %lld: cut inside the ICMP header", (long long)p->number);
    p->icmp_type = seg[0];
    p->icmp_code = seg[1];
    int error = proto == FI_PROTO_ICMP ? (seg[0] == 3 || seg[0] == 4 || seg[0] == 5 ||
                                          seg[0] == 11 || seg[0] == 12) : seg[0] < 128;
    if (error && n > 8 && quoted(seg + 8, n - 8, p) < 0)
        return no(why, nw, "packet %lld: an ICMP error's quote", (long long)p->number);
    p->payload = seg + 4;
    p->payload_len = n - 4;
    return 0;
}

static int l4(const uint8_t *d, size_t l4off, size_t end, int proto, Pkt *p, char *why,
              size_t nw) {
    const uint8_t *seg = d + l4off;
    size_t n = end > l4off ? end - l4off : 0;
    p->proto = proto;
    if (proto == FI_PROTO_UDP) {
        if (n < 8)
            return no(why, nw, "packet %lld: cut inside the UDP header", (long long)p->number);
        p->sport = (int)be16(seg);
        p->dport = (int)be16(seg + 2);
        p->payload = seg + 8;
        p->payload_len = n - 8;
        return 0;
    }
    if (proto == FI_PROTO_TCP) {
        if (n < 20)
            return no(why, nw, "packet %lld: cut inside the TCP header", (long long)p->number);
        p->sport = (int)be16(seg);
        p->dport = (int)be16(seg + 2);
        p->has_tcp = 1;
        p->tcp_seq = be32(seg + 4);
        p->tcp_ack = be32(seg + 8);
        unsigned offflags = be16(seg + 12);
        p->tcp_flags = (int)(offflags & 0xFF);
        p->tcp_window = (int)be16(seg + 14);
        size_t hlen = (offflags >> 12) * 4;
        size_t optend = hlen < n ? hlen : n;
        p->tcp_options = seg + 20;
        p->tcp_options_len = optend > 20 ? optend - 20 : 0;
        p->payload = seg + (hlen < n ? hlen : n);
        p->payload_len = hlen < n ? n - hlen : 0;
        return 0;
    }
    if (proto == FI_PROTO_ICMP || proto == FI_PROTO_ICMPV6)
        return icmp(seg, n, proto, p, why, nw);
    return no(why, nw, "packet %lld: IP protocol %d", (long long)p->number, proto);
}

int decode(const Rec *rec, int64_t number, Pkt *p, EpMemo *memo, char *why, size_t nw) {
    const uint8_t *d = rec->data;
    size_t n = rec->caplen, off;
    int v6;
    /* all but the endpoint texts zeroed (each packet's; they are written below) */
    memset(p, 0, offsetof(Pkt, src));
    memset(&p->payload, 0, offsetof(Pkt, quoted_origin) - offsetof(Pkt, payload));
    p->src[0] = p->dst[0] = p->quoted_origin[0] = p->quoted_target[0] = 0;
    p->src_len = p->dst_len = 0;
    p->number = number;
    p->time = rec->time;
    p->length = (int)rec->caplen;
    p->orig_len = (int)rec->orig_len;
    p->sport = p->dport = -1;
    p->icmp_type = p->icmp_code = -1;
    p->proto = -1;
    if ((size_t)rec->orig_len > rec->caplen)
        return no(why, nw, "packet %lld: truncated by the capture", (long long)p->number);
    if (link_layer(rec, &off, &v6) < 0 || n < off + 1)
        return no(why, nw, "packet %lld: link layer not decoded", (long long)p->number);
    char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
    size_t l4off, end, srclen = 0, dstlen = 0;
    int proto, version = d[off] >> 4;
    if (version == 4) {
        if (n < off + 20)
            return no(why, nw, "packet %lld: cut IPv4 header", (long long)p->number);
        size_t ihl = (size_t)(d[off] & 0x0F) * 4, total = be16(d + off + 2);
        proto = d[off + 9];
        if (be16(d + off + 6) & 0x1FFF)
            return no(why, nw, "packet %lld: IP fragment", (long long)p->number);
        end = total >= ihl ? (n < off + total ? n : off + total) : n;
        l4off = off + ihl;
    } else if (version == 6) {
        if (n < off + 40)
            return no(why, nw, "packet %lld: cut IPv6 header", (long long)p->number);
        size_t plen = be16(d + off + 4);
        proto = d[off + 6];
        if (ip6_text(d + off + 8, src) < 0 || ip6_text(d + off + 24, dst) < 0)
            return no(why, nw, "packet %lld: an IPv4-mapped IPv6 address", (long long)p->number);
        srclen = strlen(src);
        dstlen = strlen(dst);
        l4off = off + 40;
        end = n < l4off + plen ? n : l4off + plen;
        if (proto == 0 || proto == 43 || proto == 60)
            return no(why, nw, "packet %lld: IPv6 extension headers", (long long)p->number);
    } else {
        return no(why, nw, "packet %lld: not IP", (long long)p->number);
    }
    p->ip_version = version;
    if (l4(d, l4off, end, proto, p, why, nw) < 0)
        return -1;
    if (version == 4) {
        p->src_len = ep4_text(memo, p->src, d + off + 12, p->sport);
        p->dst_len = ep4_text(memo, p->dst, d + off + 16, p->dport);
    } else {
        p->src_len = endpoint(p->src, src, srclen, 1, p->sport);
        p->dst_len = endpoint(p->dst, dst, dstlen, 1, p->dport);
    }
    return 0;
}
