/* Small helpers shared by the HTTP front end, serve and the CLI. */
#ifndef SRV_UTIL_H
#define SRV_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The server's error convention, as the core's (nn.h): functions return 0
 * or a negative errno, and where a person has to read why, the message
 * goes with it in a srv_err: in the response object for HTTP client errors
 * (srv_route.h), filled by the commands for main.c to print. One code lies
 * outside errno's range, libuv style: SRV_EUSAGE, a command line the
 * command does not take. Only main.c turns these into exit statuses (0; 2
 * for SRV_EUSAGE; 1 for any other failure). */
#define SRV_EUSAGE (-4000)

/* An error a person reads: for HTTP client errors the status and the
 * message of the JSON body; for the commands the message alone (their
 * return value is the code). */
typedef struct srv_err {
  int code;
  char message[600];
} srv_err;

/* Formats err->message (clipped to its size); err->code is left alone. */
void srv_err_printf(srv_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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
