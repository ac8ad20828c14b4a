/* The ordered hash map of fi_map.h: chained buckets, entries on a doubly linked order list. */
#include <stdlib.h>
#include <string.h>

#include "fi_map.h"

static uint64_t hash_bytes(const void *key, size_t n) {
    const unsigned char *p = key;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    while (n--)
        h = (h ^ *p++) * 0x100000001B3ULL;
    h ^= h >> 29;
    h *= 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 32);
}

MapEntry *map_get(const Map *m, const void *key, size_t klen) {
    if (m->nbuckets == 0)
        return NULL;
    uint64_t h = hash_bytes(key, klen);
    for (MapEntry *e = m->buckets[h & (m->nbuckets - 1)]; e != NULL; e = e->hnext)
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    return NULL;
}

static int grow(Map *m) {
    size_t n = m->nbuckets ? m->nbuckets * 2 : 64;
    MapEntry **b = calloc(n, sizeof *b);
    if (b == NULL)
        return -1;
    for (MapEntry *e = m->first; e != NULL; e = e->next) {
        e->hnext = b[e->hash & (n - 1)];
        b[e->hash & (n - 1)] = e;
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return 0;
}

MapEntry *map_add(Map *m, const void *key, size_t klen) {
    if (m->len + 1 > m->nbuckets && grow(m) < 0)
        return NULL;
    MapEntry *e = malloc(sizeof *e + klen);
    if (e == NULL)
        return NULL;
    e->hash = hash_bytes(key, klen);
    e->klen = (uint32_t)klen;
    memcpy(e->key, key, klen);
    e->val.i = 0;
    size_t b = e->hash & (m->nbuckets - 1);
    e->hnext = m->buckets[b];
    m->buckets[b] = e;
    e->prev = m->last;
    e->next = NULL;
    if (m->last)
        m->last->next = e;
    else
        m->first = e;
    m->last = e;
    m->len++;
    return e;
}

static void unlink_order(Map *m, MapEntry *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        m->first = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        m->last = e->prev;
}

void map_move_end(Map *m, MapEntry *e) {
    if (m->last == e)
        return;
    unlink_order(m, e);
    e->prev = m->last;
    e->next = NULL;
    m->last->next = e;
    m->last = e;
}

void map_del(Map *m, MapEntry *e) {
    MapEntry **pp = &m->buckets[e->hash & (m->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    unlink_order(m, e);
    m->len--;
    free(e);
}

void map_free(Map *m, void (*free_val)(void *)) {
    MapEntry *e = m->first;
    while (e != NULL) {
        MapEntry *next = e->next;
        if (free_val)
            free_val(e->val.p);
        free(e);
        e = next;
    }
    free(m->buckets);
    memset(m, 0, sizeof *m);
}

MapEntry *map_get_int(const Map *m, int64_t key) { return map_get(m, &key, sizeof key); }
MapEntry *map_add_int(Map *m, int64_t key) { return map_add(m, &key, sizeof key); }
