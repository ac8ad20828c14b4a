/* An insertion-ordered hash map keyed by bytes, for the DNS and QUIC parts of the compiled fast
 * path (fast_dns.c, fast_quic.c): what their Python originals keep in dicts, sets and
 * OrderedDicts. Like a Python dict, setting a key that is there keeps its place; `map_pop_first`
 * is OrderedDict.popitem(last=False), `map_move_end` is move_to_end.
 *
 * Header-only (static functions): each part includes it, and setup.py's sources stay the core's.
 */
#ifndef PROTOLAB_FAST_MAP_H
#define PROTOLAB_FAST_MAP_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct MapNode {
    struct MapNode *chain;        /* next in its bucket */
    struct MapNode *prev, *next;  /* insertion order */
    uint64_t hash;
    size_t klen;
    unsigned char *key;           /* points after the value */
    max_align_t value[];          /* vsize bytes, then the key */
} MapNode;

typedef struct Map {
    MapNode **buckets;
    size_t nbuckets, len, vsize;
    MapNode *first, *last;
    void (*drop)(void *value);    /* frees what a value owns, or NULL */
} Map;

/* A fast 64-bit hash of a byte string, 8 bytes at a time (payloads up to ~1500 bytes). */
static inline uint64_t map_hash(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xFF51AFD7ED558CCDULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w ^ n) * 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 32);
}

/* A datagram's hash for the recent-payload tables (a relay's copies): its length and its first
 * and last 32 bytes, which is where datagrams differ (ids, connection IDs, packet numbers);
 * equal payloads are then compared whole. */
static inline uint64_t payload_hash(const void *data, size_t n) {
    if (n <= 64)
        return map_hash(data, n);
    unsigned char ends[72];
    memcpy(ends, data, 32);
    memcpy(ends + 32, (const unsigned char *)data + n - 32, 32);
    uint64_t len = n;
    memcpy(ends + 64, &len, 8);
    return map_hash(ends, sizeof ends);
}

static inline void map_init(Map *m, size_t vsize, void (*drop)(void *)) {
    memset(m, 0, sizeof *m);
    m->vsize = (vsize + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    m->drop = drop;
}

static inline MapNode *map_node(void *value) {
    return (MapNode *)((char *)value - offsetof(MapNode, value));
}

static inline const unsigned char *map_key(void *value, size_t *klen) {
    MapNode *n = map_node(value);
    *klen = n->klen;
    return n->key;
}

static inline MapNode *map_find(const Map *m, const void *key, size_t klen, uint64_t h) {
    if (m->nbuckets == 0)
        return NULL;
    for (MapNode *n = m->buckets[h & (m->nbuckets - 1)]; n != NULL; n = n->chain)
        if (n->hash == h && n->klen == klen && memcmp(n->key, key, klen) == 0)
            return n;
    return NULL;
}

/* The value stored under key (whose map_hash is h), or NULL. */
static inline void *map_get_h(const Map *m, const void *key, size_t klen, uint64_t h) {
    MapNode *n = map_find(m, key, klen, h);
    return n ? n->value : NULL;
}

static inline void *map_get(const Map *m, const void *key, size_t klen) {
    return map_get_h(m, key, klen, map_hash(key, klen));
}

static inline int map_grow(Map *m) {
    size_t nb = m->nbuckets ? m->nbuckets * 2 : 64;
    MapNode **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return -1;
    for (MapNode *n = m->first; n != NULL; n = n->next) {
        n->chain = b[n->hash & (nb - 1)];
        b[n->hash & (nb - 1)] = n;
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
    return 0;
}

/* The value under key; a new zeroed one at the end when absent (*created = 1). NULL: no memory. */
static inline void *map_put_h(Map *m, const void *key, size_t klen, uint64_t h, int *created) {
    MapNode *n = map_find(m, key, klen, h);
    if (created)
        *created = n == NULL;
    if (n != NULL)
        return n->value;
    if (m->len + 1 > m->nbuckets && map_grow(m) < 0)
        return NULL;
    n = calloc(1, sizeof *n + m->vsize + klen + 1);
    if (n == NULL)
        return NULL;
    n->hash = h;
    n->klen = klen;
    n->key = (unsigned char *)n->value + m->vsize;
    memcpy(n->key, key, klen);
    n->chain = m->buckets[h & (m->nbuckets - 1)];
    m->buckets[h & (m->nbuckets - 1)] = n;
    n->prev = m->last;
    if (m->last)
        m->last->next = n;
    else
        m->first = n;
    m->last = n;
    m->len++;
    return n->value;
}

static inline void *map_put(Map *m, const void *key, size_t klen, int *created) {
    return map_put_h(m, key, klen, map_hash(key, klen), created);
}

static inline void map_unlink_order(Map *m, MapNode *n) {
    if (n->prev)
        n->prev->next = n->next;
    else
        m->first = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        m->last = n->prev;
    n->prev = n->next = NULL;
}

/* Delete the entry whose value this is. */
static inline void map_del(Map *m, void *value) {
    MapNode *n = map_node(value);
    MapNode **at = &m->buckets[n->hash & (m->nbuckets - 1)];
    while (*at != n)
        at = &(*at)->chain;
    *at = n->chain;
    map_unlink_order(m, n);
    if (m->drop)
        m->drop(n->value);
    free(n);
    m->len--;
}

/* OrderedDict.move_to_end. */
static inline void map_move_end(Map *m, void *value) {
    MapNode *n = map_node(value);
    if (m->last == n)
        return;
    map_unlink_order(m, n);
    n->prev = m->last;
    m->last->next = n;
    m->last = n;
}

/* OrderedDict.popitem(last=False) while longer than max (facts.MAX_PENDING bounds). */
static inline void map_bound(Map *m, size_t max) {
    while (m->len > max)
        map_del(m, m->first->value);
}

static inline void *map_first(const Map *m) { return m->first ? m->first->value : NULL; }
static inline void *map_last(const Map *m) { return m->last ? m->last->value : NULL; }
static inline void *map_next(void *value) {
    MapNode *n = map_node(value)->next;
    return n ? n->value : NULL;
}
static inline void *map_prev(void *value) {
    MapNode *n = map_node(value)->prev;
    return n ? n->value : NULL;
}

static inline void map_clear(Map *m) {
    while (m->first)
        map_del(m, m->first->value);
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = 0;
}

#endif
