/* Error names, failure reporting and the RNG. (The one process-wide knob,
 * nn_set_threads, lives with the matrix products in dnn.c.) */
#include "nn.h"

#include <string.h>

const char *nn_strerror(int code) {
  switch (code) {
  case 0: return "success";
  case NN_EFORMAT: return "not in the expected file format";
  case NN_ETRUNC: return "file is truncated";
  case NN_ECHECKSUM: return "checksum mismatch: file is corrupted";
  case NN_ETOOBIG: return "beyond the size limits";
  case NN_EVERSION: return "unsupported file version";
  case NN_EMISMATCH: return "shapes or counts do not match";
  case NN_ECANCELED: return "cancelled";
  default: break;
  }
  /* strerror() is not thread-safe in general, but glibc returns static
   * strings for known codes; fall back to a fixed text for unknown ones. */
  if (code < 0 && code > -4096) {
    switch (-code) {
    case EINVAL: return "invalid argument";
    case ENOMEM: return "out of memory";
    case EIO: return "input/output error";
    case ENOENT: return "no such file or directory";
    case ENOSPC: return "no space left on device";
    case EACCES: return "permission denied";
    case EEXIST: return "already exists";
    case EROFS: return "read-only file system";
    case EDQUOT: return "disk quota exceeded";
    case EISDIR: return "is a directory";
    default: return "system error";
    }
  }
  return "unknown error";
}

#include "nn_internal.h"
#include <stdarg.h>
#include <stdio.h>

int nn_fail(nn_err *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* ---- RNG: splitmix64 to expand the seed, xoshiro256** to generate. */
static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void nn_rng_seed(nn_rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t nn_rng_next(nn_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
  s[2] ^= t; s[3] = rotl(s[3], 45);
  return result;
}

float nn_rng_uniform(nn_rng *r) {
  return (float)(nn_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

uint32_t nn_rng_below(nn_rng *r, uint32_t n) {
  /* Lemire's multiply-shift with rejection. */
  uint64_t m = (uint64_t)(uint32_t)nn_rng_next(r) * n;
  uint32_t l = (uint32_t)m;
  if (l < n) {
    uint32_t t = (uint32_t)(-n) % n;
    while (l < t) {
      m = (uint64_t)(uint32_t)nn_rng_next(r) * n;
      l = (uint32_t)m;
    }
  }
  return (uint32_t)(m >> 32);
}
