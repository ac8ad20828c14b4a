/* The hash map of fi_map.h: open addressing over (hash, node) slots, nodes from chunks. */
#include <stdlib.h>
#include <string.h>

#include "fi_map.h"

#define CHUNK (64 * 1024)

struct MapChunk {
    MapChunk *next;
    max_align_t data[];
};

void *pool_alloc(Pool *p, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (p->left < n) {
        size_t size = n > CHUNK ? n : CHUNK;
        MapChunk *c = malloc(sizeof *c + size);
        if (c == NULL)
            return NULL;
        c->next = p->chunks;
        p->chunks = c;
        p->cur = (char *)c->data;
        p->left = size;
    }
    void *out = p->cur;
    p->cur += n;
    p->left -= n;
    return out;
}

void pool_free(Pool *p) {
    for (MapChunk *c = p->chunks, *next; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    memset(p, 0, sizeof *p);
}

void *pool_grow(Pool *p, void *items, int *cap, int n, size_t size) {
    if (n < *cap)
        return items;
    int more = *cap ? *cap * 2 : 2;
    void *bigger = pool_alloc(p, (size_t)more * size);
    if (bigger != NULL && n)
        memcpy(bigger, items, (size_t)n * size);
    if (bigger != NULL)
        *cap = more;
    return bigger;
}

void map_init(Map *m, size_t vsize, void (*drop)(void *)) {
    memset(m, 0, sizeof *m);
    m->vsize = (vsize + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    m->drop = drop;
}

void map_clear(Map *m) {
    if (m->drop || m->nbig)
        for (MapNode *n = m->first, *next; n != NULL; n = next) {
            next = n->next;
            if (m->drop)
                m->drop(n->value);
            if (n->cls == 0)
                free(n);
        }
    pool_free(&m->pool);
    free(m->slots);
    map_init(m, m->vsize, m->drop);
}

static void slot_put(MapSlot *slots, size_t mask, uint64_t h, MapNode *n) {
    size_t i = h & mask;
    while (slots[i].node != NULL)
        i = (i + 1) & mask;
    slots[i].hash = h;
    slots[i].node = n;
}

/* Room for one more key: at most 3/4 of the slots in use. */
static int reserve(Map *m) {
    size_t nslots = m->slots ? m->mask + 1 : 0;
    if ((m->len + 1) * 4 <= nslots * 3)
        return 0;
    size_t n = nslots ? nslots * 2 : 64;
    MapSlot *s = calloc(n, sizeof *s);
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < nslots; i++)
        if (m->slots[i].node != NULL)
            slot_put(s, n - 1, m->slots[i].hash, m->slots[i].node);
    free(m->slots);
    m->slots = s;
    m->mask = n - 1;
    return 0;
}

/* A node with room for a klen-byte key: a deleted one of its class, else from a chunk. */
static MapNode *node_new(Map *m, size_t klen) {
    size_t cls = (klen + 1 + 31) / 32, size = sizeof(MapNode) + m->vsize + cls * 32;
    MapNode *n;
    if (cls >= MAP_CLASSES) {
        n = malloc(sizeof(MapNode) + m->vsize + klen + 1);
        if (n == NULL)
            return NULL;
        n->cls = 0;
        m->nbig++;
        return n;
    }
    if ((n = m->spare[cls]) != NULL) {
        m->spare[cls] = n->next;
        return n;
    }
    if ((n = pool_alloc(&m->pool, size)) == NULL)
        return NULL;
    n->cls = (unsigned)cls;
    return n;
}

void *map_put_h(Map *m, const void *key, size_t klen, uint64_t h, int *created) {
    MapNode *n = map_find(m, key, klen, h);
    if (created)
        *created = n == NULL;
    if (n != NULL)
        return n->value;
    if (reserve(m) < 0 || (n = node_new(m, klen)) == NULL)
        return NULL;
    memset(n->value, 0, m->vsize);
    n->hash = h;
    n->klen = klen;
    n->key = (unsigned char *)n->value + m->vsize;
    memcpy(n->key, key, klen);
    n->key[klen] = 0;
    slot_put(m->slots, m->mask, h, n);
    n->prev = m->last;
    n->next = NULL;
    if (m->last)
        m->last->next = n;
    else
        m->first = n;
    m->last = n;
    m->len++;
    return n->value;
}

static void unlink_order(Map *m, MapNode *n) {
    if (n->prev)
        n->prev->next = n->next;
    else
        m->first = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        m->last = n->prev;
}

/* Empty slot i, moving back the entries after it that would no longer be found. */
static void slot_remove(Map *m, size_t i) {
    for (size_t j = (i + 1) & m->mask; m->slots[j].node != NULL; j = (j + 1) & m->mask) {
        size_t home = m->slots[j].hash & m->mask;
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].node = NULL;
}

void map_del(Map *m, void *value) {
    MapNode *n = map_node(value);
    size_t i = n->hash & m->mask;
    while (m->slots[i].node != n)
        i = (i + 1) & m->mask;
    slot_remove(m, i);
    unlink_order(m, n);
    m->len--;
    if (m->drop)
        m->drop(n->value);
    if (n->cls == 0) {
        free(n);
        m->nbig--;
        return;
    }
    n->next = m->spare[n->cls];
    m->spare[n->cls] = n;
}

void map_move_end(Map *m, void *value) {
    MapNode *n = map_node(value);
    if (m->last == n)
        return;
    unlink_order(m, n);
    n->prev = m->last;
    n->next = NULL;
    m->last->next = n;
    m->last = n;
}

void map_bound(Map *m, size_t max) {
    while (m->len > max)
        map_del(m, m->first->value);
}
