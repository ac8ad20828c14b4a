/* The compiled fast path's one hash map: byte-string keys, insertion-ordered like a Python dict
 * (setting a key that is there keeps its place; `map_move_end` is OrderedDict.move_to_end,
 * `map_bound` is popitem(last=False) while too long). The core's tables (TcpObserver.flows,
 * FlowNumbers, FlowTable, TcpAnnotator._last) and the DNS and QUIC parts' dicts and sets.
 *
 * Each entry is one node holding its value (vsize bytes, zeroed when created) and then its key.
 * The index is open addressing (linear probing, backward-shift deletion) over slots that keep
 * each key's hash beside its node, so a probe reads no node until the hash matches. Nodes come
 * from the map's own chunks and a deleted node is kept for the next key of its size: no malloc
 * or free per packet, and clearing a map frees a few chunks.
 */
#ifndef PROTOLAB_FI_MAP_H
#define PROTOLAB_FI_MAP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAP_CLASSES 9             /* node sizes by key room: 32, 64 .. 256 bytes; above: malloc */

typedef struct MapNode {
    struct MapNode *prev, *next;  /* insertion order (next: the free list when deleted) */
    uint64_t hash;
    size_t klen;
    unsigned char *key;           /* after the value, NUL-terminated */
    unsigned cls;                 /* key room / 32 (0: malloc'd on its own) */
    max_align_t value[];          /* vsize bytes, then the key */
} MapNode;

typedef struct MapSlot {
    uint64_t hash;
    MapNode *node;                /* NULL: empty */
} MapSlot;

/* Memory handed out from big chunks and given back all at once (a map's nodes; FlowTable's
 * lists): no malloc per piece, no walk to free them. */
typedef struct MapChunk MapChunk;
typedef struct Pool {
    MapChunk *chunks;
    char *cur;                    /* the newest chunk's unused part */
    size_t left;
} Pool;

void *pool_alloc(Pool *p, size_t n);  /* aligned for any type; NULL: no memory */
void pool_free(Pool *p);              /* everything it handed out */
/* A pool-allocated array of *cap items of size bytes, holding n, with room for one more: itself,
 * or a copy twice as big when it is full (the old one stays in the pool). NULL: no memory. */
void *pool_grow(Pool *p, void *items, int *cap, int n, size_t size);

typedef struct Map {
    MapSlot *slots;
    size_t mask, len, vsize;      /* mask: number of slots - 1 */
    MapNode *first, *last;
    void (*drop)(void *value);    /* frees what a value owns, or NULL */
    MapNode *spare[MAP_CLASSES];  /* deleted nodes by class, for reuse */
    Pool pool;                    /* the nodes */
    size_t nbig;                  /* live nodes malloc'd on their own */
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
 * 64 bytes, which is where datagrams differ (ids, connection IDs, packet numbers, and the
 * encrypted bytes after them); equal hashes are then compared whole. The tail is not read: a
 * long datagram's last cache lines are often not touched by anything else. */
static inline uint64_t payload_hash(const void *data, size_t n) {
    if (n <= 64)
        return map_hash(data, n);
    uint64_t h = (map_hash(data, 64) ^ n) * 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 32);
}

void map_init(Map *m, size_t vsize, void (*drop)(void *));
void map_clear(Map *m);  /* every entry gone, memory freed; the map stays usable */

/* The value under key; a new zeroed one at the end when absent (*created = 1). NULL: no memory. */
void *map_put_h(Map *m, const void *key, size_t klen, uint64_t h, int *created);
void map_del(Map *m, void *value);        /* the entry whose value this is */
void map_move_end(Map *m, void *value);   /* OrderedDict.move_to_end */
void map_bound(Map *m, size_t max);       /* popitem(last=False) while longer than max */

/* The node of key (whose map_hash is h), or NULL (inline: the per-packet look-ups). */
static inline MapNode *map_find(const Map *m, const void *key, size_t klen, uint64_t h) {
    if (m->slots == NULL)
        return NULL;
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const MapSlot *s = &m->slots[i];
        if (s->node == NULL)
            return NULL;
        if (s->hash == h && s->node->klen == klen && memcmp(s->node->key, key, klen) == 0)
            return s->node;
    }
}

/* The value stored under key (whose map_hash is h), or NULL. */
static inline void *map_get_h(const Map *m, const void *key, size_t klen, uint64_t h) {
    MapNode *n = map_find(m, key, klen, h);
    return n ? n->value : NULL;
}

static inline void *map_get(const Map *m, const void *key, size_t klen) {
    return map_get_h(m, key, klen, map_hash(key, klen));
}

static inline void *map_put(Map *m, const void *key, size_t klen, int *created) {
    return map_put_h(m, key, klen, map_hash(key, klen), created);
}

static inline MapNode *map_node(void *value) {
    return (MapNode *)((char *)value - offsetof(MapNode, value));
}

static inline const unsigned char *map_key(void *value, size_t *klen) {
    MapNode *n = map_node(value);
    *klen = n->klen;
    return n->key;
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

#endif
