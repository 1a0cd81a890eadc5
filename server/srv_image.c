/*
 * srv_image.c — untrusted image bytes to a 28x28 MNIST-style image.
 * See srv_image.h for the contracts and the decisions behind them.
 */
#include "srv_image.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spng.h>

/* Ancillary PNG chunks (text, ICC profiles, EXIF) are buffered by libspng;
 * nothing we do needs them, so keep what one request may pin small. The
 * limits do not apply to IDAT, which is streamed. */
#define PNG_CHUNK_LIMIT ((size_t)1 << 20)
#define PNG_CACHE_LIMIT ((size_t)4 << 20)

static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/* Adam7 column start and step per pass, for placing interlaced rows. */
static const uint32_t adam7_x_start[7] = {0, 4, 0, 2, 0, 1, 0};
static const uint32_t adam7_x_delta[7] = {8, 8, 4, 4, 2, 2, 1};

/* ------------------------------------------------------------ helpers */

static void set_msg(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_msg(char *msg, size_t msglen, const char *fmt, ...) {
  if (msg == NULL || msglen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, msglen, fmt, ap);
  va_end(ap);
}

static void clear_msg(char *msg, size_t msglen) {
  if (msg != NULL && msglen > 0) msg[0] = '\0';
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

/* Rec.601 luma; the weights sum to 256 so white stays exactly 255. */
static uint8_t luma(uint8_t r, uint8_t g, uint8_t b) {
  return (uint8_t)((77u * r + 150u * g + 29u * b + 128u) >> 8);
}

void srv_gray_free(srv_gray *g) {
  if (g == NULL) return;
  free(g->px);
  g->px = NULL;
  g->w = 0;
  g->h = 0;
}

const char *srv_image_strerror(int code) {
  switch (code) {
    case 0: return "success";
    case -EINVAL: return "malformed image or invalid argument";
    case -E2BIG: return "image too large";
    case -ENOTSUP: return "unsupported image format";
    case -ENOMEM: return "out of memory";
    default: return "unknown error";
  }
}

/* ------------------------------------------------------------ sniffing */

/* Compares the media type of a Content-Type value (before any ';'
 * parameters, ignoring surrounding blanks and ASCII case) with `want`. */
static int ctype_is(const char *ct, const char *want) {
  if (ct == NULL) return 0;
  while (*ct == ' ' || *ct == '\t') ct++;
  size_t n = strlen(want);
  for (size_t i = 0; i < n; i++) {
    char c = ct[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != want[i]) return 0; /* also stops at ct's terminating NUL */
  }
  char end = ct[n];
  return end == '\0' || end == ';' || end == ' ' || end == '\t';
}

static int is_pgm_space(uint8_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
         c == '\f';
}

static int has_png_signature(const uint8_t *buf, size_t len) {
  return buf != NULL && len >= sizeof png_signature &&
         memcmp(buf, png_signature, sizeof png_signature) == 0;
}

static int has_pgm_magic(const uint8_t *buf, size_t len) {
  return buf != NULL && len >= 3 && buf[0] == 'P' &&
         (buf[1] == '5' || buf[1] == '2') &&
         (is_pgm_space(buf[2]) || buf[2] == '#');
}

srv_image_format srv_image_sniff(const char *content_type, const uint8_t *buf,
                                 size_t len) {
  if (has_png_signature(buf, len)) return SRV_IMAGE_PNG;
  if (ctype_is(content_type, "application/octet-stream")) return SRV_IMAGE_RAW;
  if (has_pgm_magic(buf, len)) return SRV_IMAGE_PGM;
  if (ctype_is(content_type, "image/png")) return SRV_IMAGE_PNG;
  if (ctype_is(content_type, "image/x-portable-graymap") ||
      ctype_is(content_type, "image/x-portable-anymap") ||
      ctype_is(content_type, "image/x-pgm"))
    return SRV_IMAGE_PGM;
  if (len > 0 && len % SRV_IMAGE_SIZE == 0) return SRV_IMAGE_RAW;
  return SRV_IMAGE_UNKNOWN;
}

/* ------------------------------------------------------------ PNG */

/* Maps a libspng error to our code and a sentence for the client. */
static int png_error(int err, char *msg, size_t msglen) {
  switch (err) {
    case SPNG_EMEM:
      set_msg(msg, msglen, "out of memory while decoding the PNG");
      return -ENOMEM;
    case SPNG_EUSER_WIDTH:
    case SPNG_EUSER_HEIGHT:
      set_msg(msg, msglen, "PNG is larger than the %ux%u limit; scale it down "
              "before sending", SRV_IMAGE_MAX_SIDE, SRV_IMAGE_MAX_SIDE);
      return -E2BIG;
    case SPNG_ECHUNK_LIMITS:
      set_msg(msg, msglen, "PNG carries oversized metadata chunks (text, ICC "
              "profile or EXIF); re-export it without metadata");
      return -E2BIG;
    case SPNG_ECHUNK_CRC:
      set_msg(msg, msglen, "PNG is corrupt: a chunk checksum (CRC) does not "
              "match; the file was damaged, re-send the original");
      return -EINVAL;
    case SPNG_EOF:
    case SPNG_IO_EOF:
    case SPNG_EIDAT_TOO_SHORT:
      set_msg(msg, msglen, "PNG is truncated: the data ends before the image "
              "does; re-send the complete file");
      return -EINVAL;
    default:
      set_msg(msg, msglen, "PNG is corrupt or unsupported (%s); re-export it "
              "as a standard PNG", spng_strerror(err));
      return -EINVAL;
  }
}

int srv_image_decode_png(const uint8_t *buf, size_t len, srv_gray *out,
                         char *msg, size_t msglen) {
  spng_ctx *ctx = NULL;
  uint8_t *row = NULL;
  uint8_t *px = NULL;
  int rc = 0, err;

  clear_msg(msg, msglen);
  if (out == NULL || (buf == NULL && len > 0)) {
    set_msg(msg, msglen, "internal error: srv_image_decode_png called with a "
            "NULL pointer");
    return -EINVAL;
  }
  *out = (srv_gray){0, 0, NULL};
  if (!has_png_signature(buf, len)) {
    set_msg(msg, msglen, "body is not a PNG: it does not start with the PNG "
            "signature");
    return -EINVAL;
  }

  /* Read the size from IHDR ourselves (it must be the first chunk), so an
   * oversized image is refused with its real dimensions before libspng
   * allocates anything. 8 signature + 4 length + 4 type + 13 data + 4 CRC. */
  if (len < 33) {
    set_msg(msg, msglen, "PNG is truncated: it ends inside its IHDR header");
    return -EINVAL;
  }
  if (be32(buf + 8) != 13 || memcmp(buf + 12, "IHDR", 4) != 0) {
    set_msg(msg, msglen, "PNG is corrupt: its first chunk is not a 13-byte "
            "IHDR");
    return -EINVAL;
  }
  uint32_t w = be32(buf + 16), h = be32(buf + 20);
  if (w == 0 || h == 0) {
    set_msg(msg, msglen, "PNG is %" PRIu32 "x%" PRIu32 "; width and height "
            "must be at least 1", w, h);
    return -EINVAL;
  }
  if (w > SRV_IMAGE_MAX_SIDE || h > SRV_IMAGE_MAX_SIDE) {
    set_msg(msg, msglen, "PNG is %" PRIu32 "x%" PRIu32 ", larger than the "
            "%ux%u limit; scale it down before sending", w, h,
            SRV_IMAGE_MAX_SIDE, SRV_IMAGE_MAX_SIDE);
    return -E2BIG;
  }

  ctx = spng_ctx_new(0);
  if (ctx == NULL) {
    set_msg(msg, msglen, "out of memory while decoding the PNG");
    return -ENOMEM;
  }
  /* Defence in depth: the same limits inside libspng, CRC errors on
   * critical chunks are fatal, damaged ancillary chunks are dropped. */
  if ((err = spng_set_image_limits(ctx, SRV_IMAGE_MAX_SIDE, SRV_IMAGE_MAX_SIDE)) ||
      (err = spng_set_chunk_limits(ctx, PNG_CHUNK_LIMIT, PNG_CACHE_LIMIT)) ||
      (err = spng_set_crc_action(ctx, SPNG_CRC_ERROR, SPNG_CRC_DISCARD)) ||
      (err = spng_set_png_buffer(ctx, buf, len))) {
    rc = png_error(err, msg, msglen);
    goto cleanup;
  }

  struct spng_ihdr ihdr;
  if ((err = spng_get_ihdr(ctx, &ihdr))) {
    rc = png_error(err, msg, msglen);
    goto cleanup;
  }
  if (ihdr.width != w || ihdr.height != h) { /* cannot happen; be sure */
    set_msg(msg, msglen, "PNG is corrupt: inconsistent IHDR");
    rc = -EINVAL;
    goto cleanup;
  }

  /* Keep alpha next to luma only if the image can be transparent; the
   * compositing background is chosen after seeing every pixel. */
  int has_alpha = ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA ||
                  ihdr.color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA;
  if (!has_alpha) {
    struct spng_trns trns;
    err = spng_get_trns(ctx, &trns);
    if (err == 0) {
      has_alpha = 1;
    } else if (err != SPNG_ECHUNKAVAIL) {
      rc = png_error(err, msg, msglen);
      goto cleanup;
    }
  }

  /* Progressive decoding to RGBA8 one row at a time: only one RGBA row is
   * ever held, whatever the colour type or bit depth. */
  if ((err = spng_decode_image(ctx, NULL, 0, SPNG_FMT_RGBA8,
                               SPNG_DECODE_TRNS | SPNG_DECODE_PROGRESSIVE))) {
    rc = png_error(err, msg, msglen);
    goto cleanup;
  }
  size_t row_len = (size_t)w * 4;
  size_t npx = (size_t)w * h;
  size_t chans = has_alpha ? 2 : 1;
  row = malloc(row_len);
  px = calloc(npx, chans);
  if (row == NULL || px == NULL) {
    set_msg(msg, msglen, "out of memory while decoding the PNG");
    rc = -ENOMEM;
    goto cleanup;
  }

  for (;;) {
    struct spng_row_info ri;
    err = spng_get_row_info(ctx, &ri);
    if (err == SPNG_EOI) break;
    if (err) {
      rc = png_error(err, msg, msglen);
      goto cleanup;
    }
    int drc = spng_decode_row(ctx, row, row_len);
    if (drc != 0 && drc != SPNG_EOI) {
      rc = png_error(drc, msg, msglen);
      goto cleanup;
    }
    if (ri.row_num >= h || ri.pass < 0 || ri.pass > 6) {
      set_msg(msg, msglen, "PNG is corrupt: row index out of range");
      rc = -EINVAL;
      goto cleanup;
    }
    /* An interlaced pass fills only its own columns of the row buffer;
     * the rest of the buffer is stale and must not be read. */
    uint32_t x0 = 0, dx = 1;
    if (ihdr.interlace_method == SPNG_INTERLACE_ADAM7) {
      x0 = adam7_x_start[ri.pass];
      dx = adam7_x_delta[ri.pass];
    }
    uint8_t *dst = px + (size_t)ri.row_num * w * chans;
    for (uint32_t x = x0; x < w; x += dx) {
      const uint8_t *p = row + (size_t)x * 4;
      uint8_t y = luma(p[0], p[1], p[2]);
      if (has_alpha) {
        dst[(size_t)x * 2] = y;
        dst[(size_t)x * 2 + 1] = p[3];
      } else {
        dst[x] = y;
      }
    }
    if (drc == SPNG_EOI) break;
  }
  /* Progressive decoding stops at the end of the pixel data, before the
   * last IDAT's CRC and the chunks after it; read on to IEND so a damaged
   * checksum or a file cut short after the pixels is still refused. */
  if ((err = spng_decode_chunks(ctx)) != 0) {
    rc = png_error(err, msg, msglen);
    goto cleanup;
  }

  if (has_alpha) {
    /* Over white by default; over black when the opaque part is a light
     * minority (light strokes on a transparent canvas), see the header. */
    uint64_t sum_a = 0, sum_ya = 0;
    for (size_t i = 0; i < npx; i++) {
      sum_a += px[2 * i + 1];
      sum_ya += (uint64_t)px[2 * i] * px[2 * i + 1];
    }
    unsigned bgv = 255;
    if (sum_a > 0 && sum_a * 2 < (uint64_t)255 * npx && sum_ya > 127 * sum_a)
      bgv = 0;
    /* Compact in place: pixel i reads bytes 2i, 2i+1 and writes byte i,
     * which is never ahead of what is still to be read. */
    for (size_t i = 0; i < npx; i++) {
      unsigned y = px[2 * i], a = px[2 * i + 1];
      px[i] = (uint8_t)((y * a + bgv * (255 - a) + 127) / 255);
    }
    uint8_t *shrunk = realloc(px, npx);
    if (shrunk != NULL) px = shrunk; /* else keep the larger block */
  }

  out->w = w;
  out->h = h;
  out->px = px;
  px = NULL;

cleanup:
  free(px);
  free(row);
  spng_ctx_free(ctx);
  return rc;
}

/* ------------------------------------------------------------ PGM */

typedef struct pgm_cursor {
  const uint8_t *p, *end;
} pgm_cursor;

/* Skips whitespace and '#' comments (to the end of the line). */
static void pgm_skip(pgm_cursor *c) {
  while (c->p < c->end) {
    if (is_pgm_space(*c->p)) {
      c->p++;
    } else if (*c->p == '#') {
      while (c->p < c->end && *c->p != '\n' && *c->p != '\r') c->p++;
    } else {
      break;
    }
  }
}

/* Reads an unsigned decimal. Values above `cap` saturate at cap + 1 (the
 * digits are still consumed) so hostile lengths cannot overflow. Returns 0,
 * or -1 when no digit is at the cursor. */
static int pgm_uint(pgm_cursor *c, uint32_t cap, uint32_t *v) {
  if (c->p >= c->end || *c->p < '0' || *c->p > '9') return -1;
  uint64_t acc = 0;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
    acc = acc * 10 + (uint64_t)(*c->p - '0');
    if (acc > cap) acc = (uint64_t)cap + 1;
    c->p++;
  }
  *v = (uint32_t)acc;
  return 0;
}

int srv_image_decode_pgm(const uint8_t *buf, size_t len, srv_gray *out,
                         char *msg, size_t msglen) {
  static const char *const field[3] = {"width", "height", "maxval"};
  uint8_t *px = NULL;
  int rc = 0;

  clear_msg(msg, msglen);
  if (out == NULL || (buf == NULL && len > 0)) {
    set_msg(msg, msglen, "internal error: srv_image_decode_pgm called with a "
            "NULL pointer");
    return -EINVAL;
  }
  *out = (srv_gray){0, 0, NULL};
  if (len < 2 || buf[0] != 'P' || (buf[1] != '5' && buf[1] != '2')) {
    set_msg(msg, msglen, "body is not a PGM: it must start with P5 (binary) "
            "or P2 (ASCII)");
    return -EINVAL;
  }
  int ascii = buf[1] == '2';
  pgm_cursor c = {buf + 2, buf + len};

  /* width, height, maxval: each preceded by whitespace and/or comments. */
  uint32_t val[3];
  for (int i = 0; i < 3; i++) {
    const uint8_t *before = c.p;
    pgm_skip(&c);
    if (c.p == c.end) {
      set_msg(msg, msglen, "PGM header is truncated: the %s is missing",
              field[i]);
      return -EINVAL;
    }
    if (c.p == before || pgm_uint(&c, UINT32_MAX - 1, &val[i]) != 0) {
      set_msg(msg, msglen, "PGM header is malformed: expected whitespace and "
              "then the %s as a decimal number", field[i]);
      return -EINVAL;
    }
    if (i == 1) {
      /* Size first, before anything depends on it. */
      if (val[0] == 0 || val[1] == 0) {
        set_msg(msg, msglen, "PGM is %" PRIu32 "x%" PRIu32 "; width and "
                "height must be at least 1", val[0], val[1]);
        return -EINVAL;
      }
      if (val[0] > SRV_IMAGE_MAX_SIDE || val[1] > SRV_IMAGE_MAX_SIDE) {
        set_msg(msg, msglen, "PGM is %" PRIu32 "x%" PRIu32 ", larger than the "
                "%ux%u limit; scale it down before sending", val[0], val[1],
                SRV_IMAGE_MAX_SIDE, SRV_IMAGE_MAX_SIDE);
        return -E2BIG;
      }
    }
  }
  uint32_t w = val[0], h = val[1], maxval = val[2];
  if (maxval == 0 || maxval > 65535) {
    set_msg(msg, msglen, "PGM maxval is %" PRIu32 "; it must be 1..65535",
            maxval);
    return -EINVAL;
  }
  /* Exactly one whitespace character ends the header (a comment may sit
   * before it); for P5 the raster starts right after it. */
  if (c.p < c.end && *c.p == '#') {
    while (c.p < c.end && *c.p != '\n' && *c.p != '\r') c.p++;
  }
  if (c.p < c.end) {
    if (!is_pgm_space(*c.p)) {
      set_msg(msg, msglen, "PGM header is malformed: maxval must be followed "
              "by whitespace");
      return -EINVAL;
    }
    c.p++;
  }

  size_t npx = (size_t)w * h;
  size_t bps = maxval > 255 ? 2 : 1, have = (size_t)(c.end - c.p);
  /* Bytes first, memory second: a header may claim any size, so the
   * raster must be in the body before w*h bytes are allocated. P5 needs
   * w*h*bps bytes; P2 at least one digit per sample and one separator
   * between samples. */
  size_t need = ascii ? 2 * npx - 1 : npx * bps;
  if (have < need) {
    if (ascii)
      set_msg(msg, msglen, "PGM is truncated: %zu samples need at least %zu "
              "bytes but only %zu follow the header", npx, need, have);
    else
      set_msg(msg, msglen, "PGM is truncated: the %" PRIu32 "x%" PRIu32
              " raster needs %zu bytes but only %zu follow the header",
              w, h, need, have);
    return -EINVAL;
  }
  px = malloc(npx);
  if (px == NULL) {
    set_msg(msg, msglen, "out of memory while decoding the PGM");
    return -ENOMEM;
  }

  if (!ascii) {
    for (size_t i = 0; i < npx; i++) {
      uint32_t v = bps == 2 ? (uint32_t)c.p[2 * i] << 8 | c.p[2 * i + 1]
                            : c.p[i];
      if (v > maxval) {
        set_msg(msg, msglen, "PGM sample %" PRIu32 " at x=%zu, y=%zu is above "
                "maxval %" PRIu32, v, i % w, i / w, maxval);
        rc = -EINVAL;
        goto cleanup;
      }
      px[i] = (uint8_t)((v * 255 + maxval / 2) / maxval);
    }
  } else {
    for (size_t i = 0; i < npx; i++) {
      uint32_t v;
      pgm_skip(&c);
      if (c.p == c.end) {
        set_msg(msg, msglen, "PGM is truncated: expected %zu samples but "
                "found %zu", npx, i);
        rc = -EINVAL;
        goto cleanup;
      }
      if (pgm_uint(&c, 65535, &v) != 0) {
        set_msg(msg, msglen, "PGM sample at x=%zu, y=%zu is not a decimal "
                "number", i % w, i / w);
        rc = -EINVAL;
        goto cleanup;
      }
      if (v > maxval) {
        set_msg(msg, msglen, "PGM sample %s%" PRIu32 " at x=%zu, y=%zu is "
                "above maxval %" PRIu32, v > 65535 ? "over " : "",
                v > 65535 ? (uint32_t)65535 : v, i % w, i / w, maxval);
        rc = -EINVAL;
        goto cleanup;
      }
      px[i] = (uint8_t)((v * 255 + maxval / 2) / maxval);
    }
  }

  out->w = w;
  out->h = h;
  out->px = px;
  px = NULL;

cleanup:
  free(px);
  return rc;
}

/* ------------------------------------------------------------ raw */

int srv_image_is_empty(const uint8_t px[SRV_IMAGE_SIZE]) {
  int ink = 0;
  for (size_t i = 0; i < SRV_IMAGE_SIZE; i++) ink |= px[i] > 255 / 16;
  return !ink;
}

int srv_image_raw_count(size_t len, size_t *n, char *msg, size_t msglen) {
  clear_msg(msg, msglen);
  if (n == NULL) {
    set_msg(msg, msglen, "internal error: srv_image_raw_count called with a "
            "NULL pointer");
    return -EINVAL;
  }
  *n = 0;
  if (len == 0 || len % SRV_IMAGE_SIZE != 0) {
    set_msg(msg, msglen, "raw body is %zu bytes; it must be a non-zero "
            "multiple of %d (28x28 uint8 images, 0 = background)", len,
            SRV_IMAGE_SIZE);
    return -EINVAL;
  }
  *n = len / SRV_IMAGE_SIZE;
  return 0;
}

/* ------------------------------------------------------------ MNIST */

/* Lower median of the border pixels: robust against a stroke that runs
 * off the edge, which would drag a mean towards the ink. */
static unsigned border_median(const uint8_t *px, uint32_t w, uint32_t h) {
  uint32_t hist[256] = {0};
  uint64_t n = 0;
  for (uint32_t x = 0; x < w; x++) {
    hist[px[x]]++;
    n++;
    if (h > 1) {
      hist[px[(size_t)(h - 1) * w + x]]++;
      n++;
    }
  }
  for (uint32_t y = 1; y + 1 < h; y++) {
    hist[px[(size_t)y * w]]++;
    n++;
    if (w > 1) {
      hist[px[(size_t)y * w + w - 1]]++;
      n++;
    }
  }
  uint64_t cum = 0, half = (n + 1) / 2;
  for (unsigned v = 0; v < 256; v++) {
    cum += hist[v];
    if (cum >= half) return v;
  }
  return 255; /* unreachable: n >= 1 */
}

/* The four stages of srv_image_to_mnist, in order. */

/* Stage 1: bounding box of ink (pixels whose ink value is above thr) and
 * the strongest ink value. Returns 0 when there is no ink at all. */
typedef struct ink_box {
  uint32_t x0, x1, y0, y1;
  unsigned peak;
} ink_box;

static int find_ink(const uint8_t *px, uint32_t w, uint32_t h, const uint8_t ink[256],
                    unsigned thr, ink_box *b) {
  uint32_t x0 = w, x1 = 0, y0 = h, y1 = 0;
  unsigned peak = 0;
  for (uint32_t y = 0; y < h; y++) {
    const uint8_t *r = px + (size_t)y * w;
    for (uint32_t x = 0; x < w; x++) {
      unsigned v = ink[r[x]];
      if (v <= thr) continue;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
      if (v > peak) peak = v;
    }
  }
  *b = (ink_box){x0, x1, y0, y1, peak};
  return x0 <= x1;
}

/* Stage 2: background removed and contrast stretched so peak ink is 255.
 * peak > thr >= bg, so the divisor is positive. */
static void ink_levels(const uint8_t ink[256], unsigned bg, unsigned peak, float level[256]) {
  const float gain = 255.0f / (float)(peak - bg);
  for (unsigned v = 0; v < 256; v++) {
    int d = (int)ink[v] - (int)bg;
    level[v] = d > 0 ? fminf((float)d * gain, 255.0f) : 0.0f;
  }
}

/* Stage 3: scales the crop so its longer side is 20 (aspect kept, shorter
 * side rounded) by area averaging: output pixel (i, j) covers the source
 * rectangle [i*sx, (i+1)*sx) x [j*sy, (j+1)*sy) of the crop; each source
 * pixel counts by the area it shares with it. Works for shrinking and
 * enlarging; indices are clamped so rounding can never leave the crop.
 * Fills sc (nw x nh), *nw, *nh and the centre of mass (*cx, *cy). */
static void scale_box(const uint8_t *px, uint32_t w, const ink_box *b, const float level[256],
                      float sc[SRV_IMAGE_BOX * SRV_IMAGE_BOX], uint32_t *nw_, uint32_t *nh_,
                      double *cx, double *cy) {
  const uint32_t bw = b->x1 - b->x0 + 1, bh = b->y1 - b->y0 + 1;
  uint32_t nw, nh;
  if (bw >= bh) {
    nw = SRV_IMAGE_BOX;
    nh = (uint32_t)floor((double)SRV_IMAGE_BOX * bh / bw + 0.5);
  } else {
    nh = SRV_IMAGE_BOX;
    nw = (uint32_t)floor((double)SRV_IMAGE_BOX * bw / bh + 0.5);
  }
  if (nw < 1) nw = 1;
  if (nh < 1) nh = 1;
  const double sx = (double)bw / nw, sy = (double)bh / nh;
  double mass = 0, mx = 0, my = 0;
  for (uint32_t j = 0; j < nh; j++) {
    const double ya = j * sy, yb = (j + 1) * sy;
    uint32_t l0 = (uint32_t)floor(ya), l1 = (uint32_t)ceil(yb);
    if (l1 > bh) l1 = bh;
    if (l0 >= l1) l0 = l1 - 1;
    for (uint32_t i = 0; i < nw; i++) {
      const double xa = i * sx, xb = (i + 1) * sx;
      uint32_t k0 = (uint32_t)floor(xa), k1 = (uint32_t)ceil(xb);
      if (k1 > bw) k1 = bw;
      if (k0 >= k1) k0 = k1 - 1;
      double acc = 0, wsum = 0;
      for (uint32_t l = l0; l < l1; l++) {
        const double wy = fmin(yb, l + 1.0) - fmax(ya, (double)l);
        if (wy <= 0) continue;
        const uint8_t *r = px + (size_t)(b->y0 + l) * w + b->x0;
        for (uint32_t k = k0; k < k1; k++) {
          const double wx = fmin(xb, k + 1.0) - fmax(xa, (double)k);
          if (wx <= 0) continue;
          acc += wx * wy * level[r[k]];
          wsum += wx * wy;
        }
      }
      const float v = wsum > 0 ? (float)(acc / wsum) : 0.0f;
      sc[j * nw + i] = v;
      mass += v;
      mx += (double)i * v;
      my += (double)j * v;
    }
  }
  *nw_ = nw;
  *nh_ = nh;
  *cx = mass > 0 ? mx / mass : (nw - 1) / 2.0;
  *cy = mass > 0 ? my / mass : (nh - 1) / 2.0;
}

/* Stage 4: places the scaled block so the centre of mass lands on (14, 14),
 * rounded to nearest and clamped so the whole nw x nh block stays inside
 * 28x28. Returns 1 if any output pixel is non-zero. */
static int place_centred(const float *sc, uint32_t nw, uint32_t nh, double cx, double cy,
                         uint8_t res[SRV_IMAGE_SIZE]) {
  const double centre = SRV_IMAGE_SIDE / 2;
  int ox = (int)floor(centre - cx + 0.5), oy = (int)floor(centre - cy + 0.5);
  const int oxmax = SRV_IMAGE_SIDE - (int)nw, oymax = SRV_IMAGE_SIDE - (int)nh;
  ox = ox < 0 ? 0 : ox > oxmax ? oxmax : ox;
  oy = oy < 0 ? 0 : oy > oymax ? oymax : oy;
  int any = 0;
  for (uint32_t j = 0; j < nh; j++) {
    for (uint32_t i = 0; i < nw; i++) {
      const float v = sc[j * nw + i] + 0.5f;
      const uint8_t b = v >= 255.0f ? 255 : (uint8_t)v;
      res[(size_t)(oy + (int)j) * SRV_IMAGE_SIDE + (size_t)(ox + (int)i)] = b;
      any |= b != 0;
    }
  }
  return any;
}

int srv_image_to_mnist(const srv_gray *g, uint8_t out[SRV_IMAGE_SIZE],
                       int *empty) {
  if (g == NULL || out == NULL || empty == NULL || g->px == NULL ||
      g->w == 0 || g->h == 0)
    return -EINVAL;
  if (g->w > SRV_IMAGE_MAX_SIDE || g->h > SRV_IMAGE_MAX_SIDE) return -E2BIG;

  const uint32_t w = g->w, h = g->h;
  const uint8_t *px = g->px;
  const unsigned med = border_median(px, w, h);
  const int invert = med > 127;
  const unsigned bg = invert ? 255 - med : med;   /* background, ink terms */
  const unsigned thr = bg + (255 - bg) / 16;      /* "is ink" threshold */

  /* Ink value of every possible pixel byte (inversion folded in). */
  uint8_t ink[256];
  for (unsigned v = 0; v < 256; v++) ink[v] = (uint8_t)(invert ? 255 - v : v);

  if (w == SRV_IMAGE_SIDE && h == SRV_IMAGE_SIDE && !invert) {
    int any = 0;
    for (size_t i = 0; i < SRV_IMAGE_SIZE; i++) any |= px[i] > thr;
    memcpy(out, px, SRV_IMAGE_SIZE);
    *empty = !any;
    return 0;
  }
  uint8_t res[SRV_IMAGE_SIZE];
  memset(res, 0, sizeof res);
  ink_box box;
  if (!find_ink(px, w, h, ink, thr, &box)) { /* no ink at all */
    memcpy(out, res, SRV_IMAGE_SIZE);
    *empty = 1;
    return 0;
  }
  float level[256], sc[SRV_IMAGE_BOX * SRV_IMAGE_BOX];
  ink_levels(ink, bg, box.peak, level);
  uint32_t nw, nh;
  double cx, cy;
  scale_box(px, w, &box, level, sc, &nw, &nh, &cx, &cy);
  /* Ink so sparse that it averages away to nothing counts as empty. */
  *empty = !place_centred(sc, nw, nh, cx, cy, res);
  memcpy(out, res, SRV_IMAGE_SIZE);
  return 0;
}

/* ------------------------------------------------------------ one-call path */

/* Names formats we recognise but do not decode, for a useful 415. */
static const char *unsupported_name(const uint8_t *buf, size_t len) {
  if (buf == NULL) return NULL;
  if (len >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff)
    return "JPEG";
  if (len >= 4 && memcmp(buf, "GIF8", 4) == 0) return "GIF";
  if (len >= 12 && memcmp(buf, "RIFF", 4) == 0 && memcmp(buf + 8, "WEBP", 4) == 0)
    return "WebP";
  if (len >= 2 && buf[0] == 'B' && buf[1] == 'M') return "BMP";
  if (len >= 4 && (memcmp(buf, "II*\0", 4) == 0 || memcmp(buf, "MM\0*", 4) == 0))
    return "TIFF";
  if (len >= 2 && buf[0] == 'P' &&
      (buf[1] == '1' || buf[1] == '3' || buf[1] == '4' || buf[1] == '6'))
    return "PBM/PPM";
  return NULL;
}

int srv_image_from_bytes(const char *content_type, const uint8_t *buf,
                         size_t len, uint8_t out[SRV_IMAGE_SIZE], int *empty,
                         char *msg, size_t msglen) {
  srv_gray g = {0, 0, NULL};
  uint8_t res[SRV_IMAGE_SIZE];
  int e = 0, rc;

  clear_msg(msg, msglen);
  if (out == NULL || empty == NULL || (buf == NULL && len > 0)) {
    set_msg(msg, msglen, "internal error: srv_image_from_bytes called with a "
            "NULL pointer");
    return -EINVAL;
  }
  if (len == 0) {
    set_msg(msg, msglen, "request body is empty; send a PNG, a PGM (P5/P2) "
            "or 784 raw bytes");
    return -EINVAL;
  }

  switch (srv_image_sniff(content_type, buf, len)) {
    case SRV_IMAGE_PNG:
      rc = srv_image_decode_png(buf, len, &g, msg, msglen);
      break;
    case SRV_IMAGE_PGM:
      rc = srv_image_decode_pgm(buf, len, &g, msg, msglen);
      break;
    case SRV_IMAGE_RAW:
      if (len != SRV_IMAGE_SIZE) {
        if (len % SRV_IMAGE_SIZE == 0)
          set_msg(msg, msglen, "raw body holds %zu images of %d bytes; send "
                  "exactly one", len / SRV_IMAGE_SIZE, SRV_IMAGE_SIZE);
        else
          set_msg(msg, msglen, "raw body is %zu bytes; it must be exactly %d "
                  "(one 28x28 uint8 image, 0 = background)", len,
                  SRV_IMAGE_SIZE);
        return -EINVAL;
      }
      /* Used as-is; only the empty flag is computed (threshold for a black
       * background, as in srv_image_to_mnist). */
      memcpy(out, buf, SRV_IMAGE_SIZE);
      *empty = srv_image_is_empty(out);
      return 0;
    case SRV_IMAGE_UNKNOWN:
    default: {
      const char *name = unsupported_name(buf, len);
      if (name != NULL)
        set_msg(msg, msglen, "%s images are not supported; send a PNG, a PGM "
                "(P5/P2) or 784 raw bytes", name);
      else
        set_msg(msg, msglen, "unrecognised image format (%zu bytes); send a "
                "PNG, a PGM (P5/P2) or 784 raw bytes", len);
      return -ENOTSUP;
    }
  }
  if (rc != 0) return rc;

  rc = srv_image_to_mnist(&g, res, &e);
  if (rc != 0) {
    set_msg(msg, msglen, "could not preprocess the image: %s",
            srv_image_strerror(rc));
    goto cleanup;
  }
  memcpy(out, res, SRV_IMAGE_SIZE);
  *empty = e;

cleanup:
  srv_gray_free(&g);
  return rc;
}
