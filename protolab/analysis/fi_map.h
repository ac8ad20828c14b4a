/* An ordered hash map with byte-string keys (a Python dict's order: insertion, with move to the
 * end for the LRU tables): TcpObserver.flows, FlowNumbers, FlowTable, TcpAnnotator._last. */
#ifndef PROTOLAB_FI_MAP_H
#define PROTOLAB_FI_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct MapEntry {
    struct MapEntry *hnext, *prev, *next;
    uint64_t hash;
    union { void *p; int64_t i; } val;
    uint32_t klen;
    char key[];
} MapEntry;

typedef struct Map {
    MapEntry **buckets;
    size_t nbuckets, len;
    MapEntry *first, *last;
} Map;

MapEntry *map_get(const Map *m, const void *key, size_t klen);
MapEntry *map_add(Map *m, const void *key, size_t klen);  /* at the end; key must be absent */
void map_move_end(Map *m, MapEntry *e);
void map_del(Map *m, MapEntry *e);                         /* frees e, not its val.p */
void map_free(Map *m, void (*free_val)(void *));
MapEntry *map_get_int(const Map *m, int64_t key);
MapEntry *map_add_int(Map *m, int64_t key);

#endif
