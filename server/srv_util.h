/* Small helpers shared by the HTTP front end, serve and the CLI. */
#ifndef SRV_UTIL_H
#define SRV_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Parses s as a plain decimal number: digits only (no sign, space or
 * leading zero), at most max. Returns 0 and sets *out, or -EINVAL (*out
 * untouched). */
int srv_parse_dec(const char *s, uint64_t max, uint64_t *out);

/* Parses a whole decimal integer in [lo, hi] (strtol syntax). Returns 0 and
 * sets *out, or -EINVAL (*out untouched). */
int srv_parse_long(const char *s, long lo, long hi, long *out);
/* Parses a finite number in (lo, hi]. Returns 0 and sets *out, or -EINVAL. */
int srv_parse_float(const char *s, double lo, double hi, double *out);

/* Resolves a data set directory: DATA_DIR/NAME when it holds the MNIST
 * file names (plain or .gz), else DATA_DIR itself when it does. Writes the
 * path into buf. Returns 0, or -ENOENT (buf then holds DATA_DIR/NAME). */
int srv_dataset_dir(const char *data_dir, const char *name, char *buf, size_t len);

/* Copies n strings into one malloc'd block: the pointer array, then the
 * strings, so one free() releases all. NULL when out of memory. */
char **srv_names_pack(const char *const *names, uint32_t n);

#endif
