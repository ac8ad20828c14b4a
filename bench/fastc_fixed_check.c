/* buf_fixed (fi_text.c) against printf("%.*f") on 30M doubles: ms-like times, ties, exact binary
 * halves and wide magnitudes, 1 to 6 digits. Build and run from the repository:
 *   gcc -O3 -std=gnu11 -Iprotolab/analysis $(python3-config --includes) bench/fastc_fixed_check.c \
 *       -o /tmp/fixed_check $(python3-config --ldflags --embed) -lm && /tmp/fixed_check
 */
#include "fi_text.c"
#include <stdlib.h>
int buf_grow(Buf *b, size_t n);
static uint64_t s = 88172645463325252ULL;
static uint64_t rnd(void){ s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }
int main(void){
  Buf b = {0}; char want[128]; long bad = 0, n = 0;
  for (long i = 0; i < 30000000; i++) {
    double x; uint64_t r = rnd();
    switch (r % 5) {
      case 0: x = (double)(r >> 11) * 0x1p-53 * 1000; break;               /* [0, 1000) */
      case 1: x = (double)(rnd() % 100000000) / 1000.0; break;              /* near ms */
      case 2: x = (double)(rnd() % 2000000) / 2000.0 + 0.0005; break;       /* ties-ish */
      case 3: x = (double)(rnd() % 1000000) / 64.0; break;                  /* exact binary ties */
      default: { double e = (double)(r % 40) - 20; x = (double)(rnd() >> 11) * 0x1p-53 * __builtin_pow(10, e); }
    }
    int d = 1 + (int)(rnd() % 6);
    b.len = 0;
    buf_fixed(&b, x, d);
    snprintf(want, sizeof want, "%.*f", d, x);
    n++;
    if (strcmp(b.p, want) != 0 && bad++ < 10) printf("x=%.17g d=%d got %s want %s\n", x, d, b.p, want);
  }
  printf("%ld of %ld differ\n", bad, n);
  return bad != 0;
}
