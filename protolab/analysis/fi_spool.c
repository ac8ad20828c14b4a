/* The spool of one pass's output (see fi_spool.h). */
#define _GNU_SOURCE
#include "fi_spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void spool_init(Spool *s, size_t mem_cap, const char *dir) {
    *s = (Spool){.mem_cap = mem_cap, .dir = dir, .fd = -1};
}

void spool_free(Spool *s) {
    free(s->mem.p);
    if (s->fd >= 0)
        close(s->fd);
    spool_init(s, s->mem_cap, s->dir);
}

/* an unnamed file in dir: O_TMPFILE, or a named one unlinked at once where it is not known */
static int spool_open(const char *dir) {
    int fd = -1;
#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
#endif
    if (fd >= 0)
        return fd;
    char name[4096];
    if (snprintf(name, sizeof name, "%s/protolab-inspect-XXXXXX", dir) >= (int)sizeof name)
        return -1;
    fd = mkostemp(name, O_CLOEXEC);
    if (fd >= 0)
        unlink(name);
    return fd;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* what was kept is let go at once (memory, disk): the second pass prints it all */
static int lose(Spool *s) {
    spool_free(s);
    s->lost = 1;
    return -1;
}

int spool_put(Spool *s, const char *p, size_t n) {
    if (s->lost)
        return -1;
    size_t room = s->mem.len < s->mem_cap ? s->mem_cap - s->mem.len : 0;
    size_t here = n < room ? n : room;
    if (here > 0 && buf_put(&s->mem, p, here) < 0)
        return lose(s);
    if (here == n)
        return 0;
    if (s->fd < 0 && (s->fd = spool_open(s->dir)) < 0)
        return lose(s);
    if (write_all(s->fd, p + here, n - here) < 0)
        return lose(s);
    s->file_len += (int64_t)(n - here);
    return 0;
}

ssize_t spool_read(const Spool *s, int64_t at, char *out, size_t n) {
    for (;;) {
        ssize_t k = pread(s->fd, out, n, (off_t)at);
        if (k >= 0 || errno != EINTR)
            return k;
    }
}
