/* Small helpers shared by the HTTP front end, serve and the CLI. */
#include "srv_util.h"

#include <errno.h>

/* A plain decimal number: digits only (no sign, space or leading zero),
 * at most max, checked in 64 bits before anything narrows it. */
int srv_parse_dec(const char *s, uint64_t max, uint64_t *out) {
  uint64_t v = 0;
  if (!s || !*s || (s[0] == '0' && s[1])) return -EINVAL;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -EINVAL;
    unsigned d = (unsigned)(*s - '0');
    if (v > (max - d) / 10) return -EINVAL;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

