/* Small helpers shared by the HTTP front end, serve and the CLI. */
#include "srv_util.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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


int srv_parse_long(const char *s, long lo, long hi, long *out) {
  if (!s || !*s) return -EINVAL;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi) return -EINVAL;
  *out = v;
  return 0;
}

int srv_parse_float(const char *s, double lo, double hi, double *out) {
  if (!s || !*s) return -EINVAL;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v) || v <= lo || v > hi) return -EINVAL;
  *out = v;
  return 0;
}

static int file_exists(const char *dir, const char *name) {
  char p[PATH_MAX];
  struct stat st;
  snprintf(p, sizeof p, "%s/%s", dir, name);
  if (stat(p, &st) == 0) return 1;
  snprintf(p, sizeof p, "%s/%s.gz", dir, name);
  return stat(p, &st) == 0;
}

int srv_dataset_dir(const char *data_dir, const char *name, char *buf, size_t len) {
  snprintf(buf, len, "%s/%s", data_dir, name);
  if (file_exists(buf, "train-images-idx3-ubyte") || file_exists(buf, "t10k-images-idx3-ubyte"))
    return 0;
  if (file_exists(data_dir, "train-images-idx3-ubyte")) {
    snprintf(buf, len, "%s", data_dir);
    return 0;
  }
  return -ENOENT;
}


char **srv_names_pack(const char *const *names, uint32_t n) {
  size_t sz = n * sizeof(char *);
  for (uint32_t i = 0; i < n; i++) sz += strlen(names[i]) + 1;
  char **out = malloc(sz ? sz : 1);
  if (!out) return NULL;
  char *p = (char *)(out + n);
  for (uint32_t i = 0; i < n; i++) {
    size_t l = strlen(names[i]) + 1;
    memcpy(p, names[i], l);
    out[i] = p;
    p += l;
  }
  return out;
}

void srv_err_printf(srv_err *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
}
