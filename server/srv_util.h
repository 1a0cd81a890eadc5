/* Small helpers shared by the HTTP front end, serve and the CLI. */
#ifndef SRV_UTIL_H
#define SRV_UTIL_H

#include <stdint.h>

/* Parses s as a plain decimal number: digits only (no sign, space or
 * leading zero), at most max. Returns 0 and sets *out, or -EINVAL (*out
 * untouched). */
int srv_parse_dec(const char *s, uint64_t max, uint64_t *out);

#endif
