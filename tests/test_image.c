/*
 * test_image.c — srv_image: PNG/PGM/raw decoding of hostile bytes and the
 * MNIST preprocessing. PNGs are made here with libspng's encoder, so the
 * tests need no fixture files; the real-digit test uses data/mnist when it
 * is there and skips otherwise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spng.h>

#include "srv_image.h"

/* ------------------------------------------------------------ helpers */

typedef struct png_opts {
  int color_type;
  int depth;
  int interlace;
  const struct spng_plte *plte;
  const struct spng_trns *trns;
} png_opts;

/* Encodes img (in the PNG's own layout, 16-bit host-endian) to a malloc'd
 * PNG. */
static uint8_t *enc_png(const void *img, size_t img_len, uint32_t w,
                        uint32_t h, png_opts o, size_t *out_len) {
  spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
  assert_non_null(ctx);
  assert_int_equal(spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1), 0);
  struct spng_ihdr ihdr = {
      .width = w,
      .height = h,
      .bit_depth = (uint8_t)o.depth,
      .color_type = (uint8_t)o.color_type,
      .interlace_method = (uint8_t)o.interlace,
  };
  assert_int_equal(spng_set_ihdr(ctx, &ihdr), 0);
  if (o.plte) assert_int_equal(spng_set_plte(ctx, (struct spng_plte *)o.plte), 0);
  if (o.trns) assert_int_equal(spng_set_trns(ctx, (struct spng_trns *)o.trns), 0);
  assert_int_equal(spng_encode_image(ctx, img, img_len, SPNG_FMT_PNG,
                                     SPNG_ENCODE_FINALIZE), 0);
  int err = 0;
  uint8_t *buf = spng_get_png_buffer(ctx, out_len, &err);
  assert_int_equal(err, 0);
  assert_non_null(buf);
  spng_ctx_free(ctx);
  return buf;
}

static uint8_t *enc_gray8(const uint8_t *img, uint32_t w, uint32_t h,
                          size_t *len) {
  png_opts o = {SPNG_COLOR_TYPE_GRAYSCALE, 8, 0, NULL, NULL};
  return enc_png(img, (size_t)w * h, w, h, o, len);
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
  }
  return c ^ 0xffffffffu;
}

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Offset of the first chunk of `type` (its length field), or 0. */
static size_t find_chunk(const uint8_t *png, size_t len, const char *type) {
  size_t off = 8;
  while (off + 12 <= len) {
    uint32_t n = rd32(png + off);
    if (memcmp(png + off + 4, type, 4) == 0) return off;
    off += 12 + (size_t)n;
  }
  return 0;
}

/* Rewrites the CRC of the chunk at `off` after its data was edited. */
static void fix_crc(uint8_t *png, size_t off) {
  uint32_t n = rd32(png + off);
  wr32(png + off + 8 + n, crc32_png(png + off + 4, 4 + (size_t)n));
}

/* A PNG whose IHDR claims w x h (with a valid CRC) and nothing more. */
static size_t fake_ihdr_png(uint8_t out[64], uint32_t w, uint32_t h) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  memcpy(out, sig, 8);
  wr32(out + 8, 13);
  memcpy(out + 12, "IHDR", 4);
  wr32(out + 16, w);
  wr32(out + 20, h);
  out[24] = 8; /* depth */
  out[25] = 0; /* gray */
  out[26] = out[27] = out[28] = 0;
  fix_crc(out, 8);
  /* IEND, so only the size can be wrong. */
  wr32(out + 33, 0);
  memcpy(out + 37, "IEND", 4);
  fix_crc(out, 33);
  return 45;
}

static void fill(uint8_t *img, uint32_t w, uint32_t h, uint8_t v) {
  memset(img, v, (size_t)w * h);
}

static void rect(uint8_t *img, uint32_t w, uint32_t x, uint32_t y, uint32_t rw,
                 uint32_t rh, uint8_t v) {
  for (uint32_t j = y; j < y + rh; j++)
    for (uint32_t i = x; i < x + rw; i++) img[(size_t)j * w + i] = v;
}

/* Unit-grid rectangle [ux, ux+uw) x [uy, uy+uh) scaled by s, edges rounded
 * to whole pixels (so non-integer scales give uneven strokes, as real
 * drawings do). */
static void urect(uint8_t *img, uint32_t w, uint32_t x, uint32_t y, double s,
                  int ux, int uy, int uw, int uh, uint8_t v) {
  uint32_t x0 = x + (uint32_t)floor(ux * s + 0.5);
  uint32_t x1 = x + (uint32_t)floor((ux + uw) * s + 0.5);
  uint32_t y0 = y + (uint32_t)floor(uy * s + 0.5);
  uint32_t y1 = y + (uint32_t)floor((uy + uh) * s + 0.5);
  rect(img, w, x0, y0, x1 - x0, y1 - y0, v);
}

/* A digit-like "7" on a 16x20 unit grid: top bar, a right-hand stem and a
 * short crossbar. Asymmetric on purpose, so its centre of mass is not its
 * box centre. */
static void draw_seven(uint8_t *img, uint32_t w, uint32_t x, uint32_t y,
                       double s, uint8_t v) {
  urect(img, w, x, y, s, 0, 0, 16, 4, v);   /* top bar */
  urect(img, w, x, y, s, 11, 4, 5, 16, v);  /* stem */
  urect(img, w, x, y, s, 6, 10, 10, 2, v);  /* crossbar */
}

static void com28(const uint8_t *im, double *cx, double *cy) {
  double m = 0, sx = 0, sy = 0;
  for (int y = 0; y < 28; y++)
    for (int x = 0; x < 28; x++) {
      double v = im[y * 28 + x];
      m += v;
      sx += v * x;
      sy += v * y;
    }
  assert_true(m > 0);
  *cx = sx / m;
  *cy = sy / m;
}

/* Box of pixels > thr; returns its width and height. */
static void bbox28(const uint8_t *im, int thr, int *bw, int *bh) {
  int x0 = 28, x1 = -1, y0 = 28, y1 = -1;
  for (int y = 0; y < 28; y++)
    for (int x = 0; x < 28; x++)
      if (im[y * 28 + x] > thr) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
  *bw = x1 - x0 + 1;
  *bh = y1 - y0 + 1;
}

static double mad28(const uint8_t *a, const uint8_t *b) {
  double s = 0;
  for (int i = 0; i < 784; i++) s += fabs((double)a[i] - b[i]);
  return s / 784;
}

/* Smallest mean abs difference over integer shifts of b by up to r px:
 * separates "same digit, one pixel off" from "different picture". */
static double mad28_aligned(const uint8_t *a, const uint8_t *b, int r) {
  double best = 1e9;
  for (int dy = -r; dy <= r; dy++)
    for (int dx = -r; dx <= r; dx++) {
      double s = 0;
      for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) {
          int xs = x - dx, ys = y - dy;
          int vb = (xs >= 0 && xs < 28 && ys >= 0 && ys < 28) ? b[ys * 28 + xs] : 0;
          s += fabs((double)a[y * 28 + x] - vb);
        }
      if (s / 784 < best) best = s / 784;
    }
  return best;
}

static int all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

/* Runs gray w x h through to_mnist. */
static int mnist_of(const uint8_t *img, uint32_t w, uint32_t h, uint8_t out[784],
                    int *empty) {
  srv_gray g = {w, h, (uint8_t *)img};
  return srv_image_to_mnist(&g, out, empty);
}

/* ------------------------------------------------------------ PNG decoding */

static void test_png_gray8_exact(void **state) {
  (void)state;
  uint8_t img[40 * 30];
  for (int i = 0; i < 40 * 30; i++) img[i] = (uint8_t)(i * 7);
  size_t len;
  uint8_t *png = enc_gray8(img, 40, 30, &len);
  srv_gray g = {0, 0, NULL};
  char msg[256];
  assert_int_equal(srv_image_decode_png(png, len, &g, msg, sizeof msg), 0);
  assert_string_equal(msg, "");
  assert_int_equal(g.w, 40);
  assert_int_equal(g.h, 30);
  assert_memory_equal(g.px, img, sizeof img);
  srv_gray_free(&g);
  assert_null(g.px);
  srv_gray_free(&g); /* twice is fine */
  srv_gray_free(NULL);
  free(png);
}

static void test_png_rgb8_luma(void **state) {
  (void)state;
  /* white, black, red, green, blue, mid grey */
  const uint8_t rgb[6 * 3] = {255, 255, 255, 0, 0, 0, 255, 0, 0,
                              0, 255, 0, 0, 0, 255, 128, 128, 128};
  const uint8_t want[6] = {255, 0, 77, 149, 29, 128};
  png_opts o = {SPNG_COLOR_TYPE_TRUECOLOR, 8, 0, NULL, NULL};
  size_t len;
  uint8_t *png = enc_png(rgb, sizeof rgb, 6, 1, o, &len);
  srv_gray g = {0, 0, NULL};
  assert_int_equal(srv_image_decode_png(png, len, &g, NULL, 0), 0);
  assert_int_equal(g.w, 6);
  assert_int_equal(g.h, 1);
  assert_memory_equal(g.px, want, 6);
  srv_gray_free(&g);
  free(png);
}

/* Builds a 200x200 RGBA canvas: transparent background, opaque strokes of
 * colour (v, v, v), as a browser exports a drawing pad. */
static uint8_t *canvas_png(uint8_t v, size_t *len) {
  const uint32_t W = 200, H = 200;
  uint8_t *rgba = calloc((size_t)W * H, 4); /* (0,0,0,0): transparent */
  uint8_t *mask = calloc((size_t)W * H, 1);
  assert_non_null(rgba);
  assert_non_null(mask);
  draw_seven(mask, W, 40, 50, 4, 1);
  for (size_t i = 0; i < (size_t)W * H; i++)
    if (mask[i]) {
      rgba[4 * i] = rgba[4 * i + 1] = rgba[4 * i + 2] = v;
      rgba[4 * i + 3] = 255;
    }
  /* an anti-aliased edge pixel, half transparent */
  rgba[4 * (49 * W + 60)] = v;
  rgba[4 * (49 * W + 60) + 3] = 128;
  png_opts o = {SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 8, 0, NULL, NULL};
  uint8_t *png = enc_png(rgba, (size_t)W * H * 4, W, H, o, len);
  free(mask);
  free(rgba);
  return png;
}

static void test_png_rgba_canvas_black_strokes(void **state) {
  (void)state;
  size_t len;
  uint8_t *png = canvas_png(0, &len);
  srv_gray g = {0, 0, NULL};
  assert_int_equal(srv_image_decode_png(png, len, &g, NULL, 0), 0);
  assert_int_equal(g.px[0], 255);                  /* background: white */
  assert_int_equal(g.px[60 * 200 + 60], 0);        /* stroke: black */
  assert_int_equal(g.px[49 * 200 + 60], 127);      /* half alpha over white */
  srv_gray_free(&g);

  uint8_t out[784];
  int empty = -1;
  char msg[256];
  assert_int_equal(srv_image_from_bytes("image/png", png, len, out, &empty, msg,
                                        sizeof msg), 0);
  assert_int_equal(empty, 0);
  double cx, cy;
  com28(out, &cx, &cy);
  assert_true(fabs(cx - 14) <= 1 && fabs(cy - 14) <= 1);
  assert_int_equal(out[0], 0); /* background is dark in MNIST terms */
  free(png);
}

static void test_png_rgba_canvas_white_strokes(void **state) {
  (void)state;
  size_t lb, lw;
  uint8_t *black = canvas_png(0, &lb);
  uint8_t *white = canvas_png(255, &lw);
  srv_gray g = {0, 0, NULL};
  assert_int_equal(srv_image_decode_png(white, lw, &g, NULL, 0), 0);
  /* light minority over transparency: composited over black instead */
  assert_int_equal(g.px[0], 0);
  assert_int_equal(g.px[60 * 200 + 60], 255);
  srv_gray_free(&g);
  uint8_t ob[784], ow[784];
  int eb, ew;
  assert_int_equal(srv_image_from_bytes(NULL, black, lb, ob, &eb, NULL, 0), 0);
  assert_int_equal(srv_image_from_bytes(NULL, white, lw, ow, &ew, NULL, 0), 0);
  assert_int_equal(eb, 0);
  assert_int_equal(ew, 0);
  assert_true(mad28(ob, ow) < 1.0);
  free(black);
  free(white);
}

static void test_png_fully_transparent_is_empty(void **state) {
  (void)state;
  uint8_t rgba[64 * 64 * 4];
  memset(rgba, 0, sizeof rgba);
  png_opts o = {SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 8, 0, NULL, NULL};
  size_t len;
  uint8_t *png = enc_png(rgba, sizeof rgba, 64, 64, o, &len);
  uint8_t out[784];
  memset(out, 0xAA, sizeof out);
  int empty = 0;
  assert_int_equal(srv_image_from_bytes("image/png", png, len, out, &empty, NULL,
                                        0), 0);
  assert_int_equal(empty, 1);
  assert_true(all_zero(out, 784));
  free(png);
}

static void test_png_gray16(void **state) {
  (void)state;
  const uint16_t img[4] = {0, 65535, 32768, 257 * 100};
  png_opts o = {SPNG_COLOR_TYPE_GRAYSCALE, 16, 0, NULL, NULL};
  size_t len;
  uint8_t *png = enc_png(img, sizeof img, 2, 2, o, &len);
  srv_gray g = {0, 0, NULL};
  assert_int_equal(srv_image_decode_png(png, len, &g, NULL, 0), 0);
  assert_int_equal(g.w, 2);
  assert_int_equal(g.px[0], 0);
  assert_int_equal(g.px[1], 255);
  assert_int_equal(g.px[2], 128);
  assert_int_equal(g.px[3], 100);
  srv_gray_free(&g);
  free(png);
}

static void test_png_gray_alpha_and_1bit(void **state) {
  (void)state;
  /* gray+alpha: opaque 40, transparent anything, half alpha 0, opaque 10 */
  const uint8_t ga[4 * 2] = {40, 255, 77, 0, 0, 128, 10, 255};
  png_opts o = {SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, 8, 0, NULL, NULL};
  size_t len;
  uint8_t *png = enc_png(ga, sizeof ga, 4, 1, o, &len);
  srv_gray g = {0, 0, NULL};
  assert_int_equal(srv_image_decode_png(png, len, &g, NULL, 0), 0);
  assert_int_equal(g.px[0], 40);
  assert_int_equal(g.px[1], 255);
  assert_int_equal(g.px[2], 127);
  assert_int_equal(g.px[3], 10);
  srv_gray_free(&g);
  free(png);

  /* 1-bit gray, 10 px wide: 1010000011 */
  const uint8_t bits[2] = {0xA0, 0xC0};
  png_opts o1 = {SPNG_COLOR_TYPE_GRAYSCALE, 1, 0, NULL, NULL};
  png = enc_png(bits, sizeof bits, 10, 1, o1, &len);
  assert_int_equal(srv_image_decode_png(png, len, &g, NULL, 0), 0);
  const uint8_t want[10] = {255, 0, 255, 0, 0, 0, 0, 0, 255, 255};
  assert_memory_equal(g.px, want, 10);
  srv_gray_free(&g);
  free(png);
}

static void test_png_palette_trns(void **state) {
  (void)state;
  struct spng_plte plte = {0};
  plte.n_entries = 3;
  plte.entries[0] = (struct spng_plte_entry){255, 255, 255, 255};
  plte.entries[1] = (struct spng_plte_entry){0, 0, 0, 255};
  plte.entries[2] = (struct spng_plte_entry){255, 0, 0, 255};
  struct spng_trns trns = {0};
  trns.n_type3_entries = 1;
  trns.type3_alpha[0] = 0; /* index 0 transparent */
  const uint8_t idx[4] = {0, 1, 2, 1};
  png_opts o = {SPNG_COLOR_TYPE_INDEXED, 8, 0, &plte, &trns};
  size_t len;
  uint8_t *png = enc_png(idx, sizeof idx, 4, 1, o, &len);
  srv_gray g = {0, 0, NULL};
  char msg[256];
  assert_int_equal(srv_image_decode_png(png, len, &g, msg, sizeof msg), 0);
  assert_int_equal(g.px[0], 255); /* transparent over white */
  assert_int_equal(g.px[1], 0);
  assert_int_equal(g.px[2], 77);
  assert_int_equal(g.px[3], 0);
  srv_gray_free(&g);
  free(png);
}

/* Adam7 rows arrive pass by pass; the result must match the plain PNG,
 * including for sizes where some passes are empty. */
static void test_png_interlaced_matches(void **state) {
  (void)state;
  const uint32_t sizes[][2] = {{1, 1}, {3, 2}, {13, 11}, {64, 9}, {5, 40}};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    uint32_t w = sizes[s][0], h = sizes[s][1];
    size_t n = (size_t)w * h * 3;
    uint8_t *rgb = malloc(n);
    assert_non_null(rgb);
    uint32_t seed = 12345u + (uint32_t)s;
    for (size_t i = 0; i < n; i++) {
      seed = seed * 1103515245u + 12345u;
      rgb[i] = (uint8_t)(seed >> 16);
    }
    png_opts plain = {SPNG_COLOR_TYPE_TRUECOLOR, 8, 0, NULL, NULL};
    png_opts inter = {SPNG_COLOR_TYPE_TRUECOLOR, 8, 1, NULL, NULL};
    size_t l1, l2;
    uint8_t *p1 = enc_png(rgb, n, w, h, plain, &l1);
    uint8_t *p2 = enc_png(rgb, n, w, h, inter, &l2);
    assert_int_equal(p2[28], 1); /* really interlaced */
    srv_gray g1 = {0, 0, NULL}, g2 = {0, 0, NULL};
    assert_int_equal(srv_image_decode_png(p1, l1, &g1, NULL, 0), 0);
    assert_int_equal(srv_image_decode_png(p2, l2, &g2, NULL, 0), 0);
    assert_memory_equal(g1.px, g2.px, (size_t)w * h);
    srv_gray_free(&g1);
    srv_gray_free(&g2);
    free(p1);
    free(p2);
    free(rgb);
  }
}

/* The chunk-size limit must not apply to image data: a big photo with one
 * multi-megabyte IDAT is legitimate. */
static void test_png_single_large_idat(void **state) {
  (void)state;
  const uint32_t W = 1500, H = 1500;
  uint8_t *img = malloc((size_t)W * H);
  assert_non_null(img);
  uint32_t seed = 1;
  for (size_t i = 0; i < (size_t)W * H; i++) {
    seed = seed * 1103515245u + 12345u;
    img[i] = (uint8_t)(seed >> 16); /* noise: incompressible */
  }
  size_t len;
  uint8_t *png = enc_gray8(img, W, H, &len);
  /* Merge every IDAT into one chunk. */
  uint8_t *merged = malloc(len + 64);
  assert_non_null(merged);
  size_t first = find_chunk(png, len, "IDAT");
  assert_true(first > 0);
  memcpy(merged, png, first);
  size_t mo = first + 8, idat_len = 0, off = first;
  while (off + 12 <= len && memcmp(png + off + 4, "IDAT", 4) == 0) {
    uint32_t n = rd32(png + off);
    memcpy(merged + mo, png + off + 8, n);
    mo += n;
    idat_len += n;
    off += 12 + (size_t)n;
  }
  assert_true(idat_len > ((size_t)2 << 20));
  wr32(merged + first, (uint32_t)idat_len);
  memcpy(merged + first + 4, "IDAT", 4);
  fix_crc(merged, first);
  mo += 4;
  memcpy(merged + mo, png + off, len - off); /* IEND */
  mo += len - off;

  srv_gray g = {0, 0, NULL};
  char msg[256];
  assert_int_equal(srv_image_decode_png(merged, mo, &g, msg, sizeof msg), 0);
  assert_memory_equal(g.px, img, (size_t)W * H);
  srv_gray_free(&g);
  free(merged);
  free(png);
  free(img);
}

/* A 2 MiB tEXt chunk is over the metadata limit: refused or skipped, but
 * never an unbounded allocation or a crash. */
static void test_png_huge_text_chunk(void **state) {
  (void)state;
  uint8_t img[16] = {0};
  size_t len;
  uint8_t *png = enc_gray8(img, 4, 4, &len);
  size_t idat = find_chunk(png, len, "IDAT");
  const size_t tn = (size_t)2 << 20;
  uint8_t *big = malloc(len + tn + 12);
  assert_non_null(big);
  memcpy(big, png, idat);
  wr32(big + idat, (uint32_t)tn);
  memcpy(big + idat + 4, "tEXt", 4);
  memset(big + idat + 8, 'a', tn);
  memcpy(big + idat + 8, "Comment", 8); /* keyword + NUL */
  fix_crc(big, idat);
  memcpy(big + idat + 12 + tn, png + idat, len - idat);
  srv_gray g = {0, 0, NULL};
  char msg[256];
  int rc = srv_image_decode_png(big, len + tn + 12, &g, msg, sizeof msg);
  assert_true(rc == 0 || rc == -E2BIG);
  if (rc == -E2BIG) assert_non_null(strstr(msg, "metadata"));
  srv_gray_free(&g);
  free(big);
  free(png);
}

/* ------------------------------------------------------------ PNG rejection */

static void test_png_rejects_truncated(void **state) {
  (void)state;
  uint8_t img[32 * 32];
  for (int i = 0; i < 32 * 32; i++) img[i] = (uint8_t)(i * 13);
  size_t len;
  uint8_t *png = enc_gray8(img, 32, 32, &len);
  size_t iend = find_chunk(png, len, "IEND");
  assert_true(iend > 0);
  /* Every prefix that cuts the pixel data, a CRC or the IEND header must
   * fail (only IEND's own CRC may be missing: libspng stops at its type,
   * and nothing follows it). Each copy lives in its own allocation so ASan
   * catches any read past the end. */
  for (size_t n = 0; n < iend + 8; n++) {
    uint8_t *cut = malloc(n ? n : 1);
    assert_non_null(cut);
    memcpy(cut, png, n);
    srv_gray g = {0, 0, NULL};
    char msg[256];
    int rc = srv_image_decode_png(cut, n, &g, msg, sizeof msg);
    assert_int_equal(rc, -EINVAL);
    assert_null(g.px);
    assert_true(strlen(msg) > 0);
    free(cut);
  }
  free(png);
}

static void test_png_rejects_bad_crc_and_idat(void **state) {
  (void)state;
  uint8_t img[32 * 32];
  for (int i = 0; i < 32 * 32; i++) img[i] = (uint8_t)(i * 13);
  size_t len;
  uint8_t *png = enc_gray8(img, 32, 32, &len);
  size_t idat = find_chunk(png, len, "IDAT");
  uint32_t n = rd32(png + idat);
  srv_gray g = {0, 0, NULL};
  char msg[256];

  /* 1. a damaged IDAT checksum */
  uint8_t *bad = malloc(len);
  assert_non_null(bad);
  memcpy(bad, png, len);
  bad[idat + 8 + n] ^= 1;
  assert_int_equal(srv_image_decode_png(bad, len, &g, msg, sizeof msg), -EINVAL);
  assert_non_null(strstr(msg, "CRC"));
  assert_null(g.px);

  /* 1b. a flipped data byte: libspng inflates as it goes, so zlib or the
   * row filters may notice before the CRC does; either way it is refused */
  memcpy(bad, png, len);
  bad[idat + 8 + n / 2] ^= 0x5a;
  assert_int_equal(srv_image_decode_png(bad, len, &g, msg, sizeof msg), -EINVAL);
  assert_null(g.px);

  /* 2. the same damage with a recomputed CRC: zlib must catch it */
  fix_crc(bad, idat);
  assert_int_equal(srv_image_decode_png(bad, len, &g, msg, sizeof msg), -EINVAL);
  assert_null(g.px);

  /* 3. a damaged IHDR CRC */
  memcpy(bad, png, len);
  bad[29] ^= 1;
  assert_int_equal(srv_image_decode_png(bad, len, &g, msg, sizeof msg), -EINVAL);

  /* 4. a bad colour type in IHDR (with a valid CRC) */
  memcpy(bad, png, len);
  bad[25] = 5;
  fix_crc(bad, 8);
  assert_int_equal(srv_image_decode_png(bad, len, &g, msg, sizeof msg), -EINVAL);
  free(bad);
  free(png);
}

static void test_png_rejects_oversized_and_zero(void **state) {
  (void)state;
  uint8_t p[64];
  size_t n;
  srv_gray g = {0, 0, NULL};
  char msg[256];

  n = fake_ihdr_png(p, 5000, 300);
  assert_int_equal(srv_image_decode_png(p, n, &g, msg, sizeof msg), -E2BIG);
  assert_non_null(strstr(msg, "5000x300"));
  assert_non_null(strstr(msg, "4096x4096"));

  n = fake_ihdr_png(p, 4096, 4097);
  assert_int_equal(srv_image_decode_png(p, n, &g, msg, sizeof msg), -E2BIG);
  n = fake_ihdr_png(p, 0xffffffffu, 0xffffffffu);
  assert_int_equal(srv_image_decode_png(p, n, &g, msg, sizeof msg), -E2BIG);

  n = fake_ihdr_png(p, 0, 10);
  assert_int_equal(srv_image_decode_png(p, n, &g, msg, sizeof msg), -EINVAL);
  assert_non_null(strstr(msg, "0x10"));

  /* 4096x4096 passes the size check and then fails for lack of IDAT */
  n = fake_ihdr_png(p, 4096, 4096);
  assert_int_equal(srv_image_decode_png(p, n, &g, msg, sizeof msg), -EINVAL);
  assert_null(g.px);

  /* the one-call path reports the same */
  uint8_t out[784];
  int empty;
  n = fake_ihdr_png(p, 5000, 300);
  assert_int_equal(srv_image_from_bytes(NULL, p, n, out, &empty, msg, sizeof msg),
                   -E2BIG);
  assert_non_null(strstr(msg, "5000x300"));
}

static void test_png_rejects_garbage(void **state) {
  (void)state;
  srv_gray g = {0, 0, NULL};
  char msg[256];
  const uint8_t junk[] = "this is not an image at all";
  assert_int_equal(srv_image_decode_png(junk, sizeof junk, &g, msg, sizeof msg),
                   -EINVAL);
  assert_non_null(strstr(msg, "signature"));
  assert_int_equal(srv_image_decode_png(NULL, 0, &g, msg, sizeof msg), -EINVAL);
  assert_int_equal(srv_image_decode_png(junk, sizeof junk, NULL, msg, sizeof msg),
                   -EINVAL);
  /* signature then garbage */
  uint8_t p[64];
  size_t n = fake_ihdr_png(p, 10, 10);
  memset(p + 12, 'x', 4);
  assert_int_equal(srv_image_decode_png(p, n, &g, msg, sizeof msg), -EINVAL);
  assert_null(g.px);
}

/* Random byte damage to a valid PNG: any result is fine except a crash,
 * a leak or an out-of-bounds access (ASan/UBSan watch for those). */
static void test_png_mutation_fuzz(void **state) {
  (void)state;
  uint8_t rgba[24 * 20 * 4];
  uint32_t seed = 99;
  for (size_t i = 0; i < sizeof rgba; i++) {
    seed = seed * 1103515245u + 12345u;
    rgba[i] = (uint8_t)((seed >> 16) & 0xf0);
  }
  png_opts types[] = {
      {SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 8, 0, NULL, NULL},
      {SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 8, 1, NULL, NULL},
      {SPNG_COLOR_TYPE_GRAYSCALE, 8, 1, NULL, NULL},
  };
  int ok = 0, bad = 0;
  for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
    size_t len;
    size_t raw = types[t].color_type == SPNG_COLOR_TYPE_GRAYSCALE ? 24 * 20 : sizeof rgba;
    uint8_t *png = enc_png(rgba, raw, 24, 20, types[t], &len);
    for (int it = 0; it < 1500; it++) {
      uint8_t *m = malloc(len);
      assert_non_null(m);
      memcpy(m, png, len);
      seed = seed * 1103515245u + 12345u;
      int flips = 1 + (int)((seed >> 16) % 4);
      for (int f = 0; f < flips; f++) {
        seed = seed * 1103515245u + 12345u;
        size_t pos = 8 + (seed >> 8) % (len - 8);
        seed = seed * 1103515245u + 12345u;
        m[pos] ^= (uint8_t)(1 + (seed >> 16) % 255);
      }
      /* Fix the CRCs half of the time so the damage reaches zlib and the
       * filters instead of stopping at the checksum. */
      if (it & 1) {
        size_t off = 8;
        while (off + 12 <= len) {
          uint32_t cn = rd32(m + off);
          if (cn > len - off - 12) break;
          fix_crc(m, off);
          off += 12 + (size_t)cn;
        }
      }
      srv_gray g = {0, 0, NULL};
      char msg[128];
      int rc = srv_image_decode_png(m, len, &g, msg, sizeof msg);
      if (rc == 0) {
        assert_non_null(g.px);
        assert_true(g.w <= SRV_IMAGE_MAX_SIDE && g.h <= SRV_IMAGE_MAX_SIDE);
        uint8_t out[784];
        int empty;
        assert_int_equal(srv_image_to_mnist(&g, out, &empty), 0);
        ok++;
      } else {
        assert_true(rc == -EINVAL || rc == -E2BIG);
        assert_null(g.px);
        assert_true(strlen(msg) > 0);
        bad++;
      }
      srv_gray_free(&g);
      free(m);
    }
    free(png);
  }
  assert_true(bad > 0);
  (void)ok;
}

/* ------------------------------------------------------------ PGM */

static void test_pgm_p5_with_comments(void **state) {
  (void)state;
  const char hdr[] = "P5\n# made by hand\n 4 # width\n3\n# maxval next\n255\n";
  uint8_t buf[sizeof hdr - 1 + 12];
  memcpy(buf, hdr, sizeof hdr - 1);
  for (int i = 0; i < 12; i++) buf[sizeof hdr - 1 + i] = (uint8_t)(i * 20);
  buf[sizeof hdr - 1] = '\n'; /* a raster byte that looks like whitespace */
  srv_gray g = {0, 0, NULL};
  char msg[256];
  assert_int_equal(srv_image_decode_pgm(buf, sizeof buf, &g, msg, sizeof msg), 0);
  assert_int_equal(g.w, 4);
  assert_int_equal(g.h, 3);
  assert_int_equal(g.px[0], '\n');
  for (int i = 1; i < 12; i++) assert_int_equal(g.px[i], i * 20);
  srv_gray_free(&g);
}

static void test_pgm_p5_16bit_and_small_maxval(void **state) {
  (void)state;
  const char hdr[] = "P5 2 1 65535\n";
  uint8_t buf[sizeof hdr - 1 + 4];
  memcpy(buf, hdr, sizeof hdr - 1);
  const uint8_t be[4] = {0x80, 0x00, 0xff, 0xff}; /* 32768, 65535 */
  memcpy(buf + sizeof hdr - 1, be, 4);
  srv_gray g = {0, 0, NULL};
  assert_int_equal(srv_image_decode_pgm(buf, sizeof buf, &g, NULL, 0), 0);
  assert_int_equal(g.px[0], 128);
  assert_int_equal(g.px[1], 255);
  srv_gray_free(&g);

  const uint8_t one[] = {'P', '5', ' ', '3', ' ', '1', ' ', '1', '\n', 0, 1, 1};
  assert_int_equal(srv_image_decode_pgm(one, sizeof one, &g, NULL, 0), 0);
  assert_int_equal(g.px[0], 0);
  assert_int_equal(g.px[1], 255);
  srv_gray_free(&g);
}

static void test_pgm_p2_with_comments(void **state) {
  (void)state;
  const char txt[] =
      "P2\n"
      "# ASCII gray map\n"
      "3 2\n"
      "15 # maxval\n"
      "0 15 7\n"
      "# a comment between rows\n"
      "8\t3 15\n";
  srv_gray g = {0, 0, NULL};
  char msg[256];
  assert_int_equal(srv_image_decode_pgm((const uint8_t *)txt, sizeof txt - 1, &g,
                                        msg, sizeof msg), 0);
  assert_int_equal(g.w, 3);
  assert_int_equal(g.h, 2);
  const uint8_t want[6] = {0, 255, 119, 136, 51, 255};
  assert_memory_equal(g.px, want, 6);
  srv_gray_free(&g);

  /* through the one-call path: PGM sniffed from the bytes */
  uint8_t out[784];
  int empty;
  assert_int_equal(srv_image_from_bytes("application/x-www-form-urlencoded",
                                        (const uint8_t *)txt, sizeof txt - 1, out,
                                        &empty, msg, sizeof msg), 0);
}

static void expect_pgm_error(const char *text, int code, const char *needle) {
  size_t len = strlen(text);
  /* copy into an exact-size block so ASan sees any over-read */
  uint8_t *b = malloc(len ? len : 1);
  assert_non_null(b);
  memcpy(b, text, len);
  srv_gray g = {0, 0, NULL};
  char msg[256];
  int rc = srv_image_decode_pgm(b, len, &g, msg, sizeof msg);
  if (rc != code) fail_msg("PGM %.20s...: rc %d, want %d (%s)", text, rc, code, msg);
  assert_null(g.px);
  assert_true(strlen(msg) > 0);
  if (needle && !strstr(msg, needle))
    fail_msg("message \"%s\" lacks \"%s\"", msg, needle);
  free(b);
}

static void test_pgm_rejects(void **state) {
  (void)state;
  expect_pgm_error("P5\n4 3\n255\nabc", -EINVAL, "truncated");
  expect_pgm_error("P5\n4 3\n", -EINVAL, "maxval");
  expect_pgm_error("P5\n4 3\n0\n123456789012", -EINVAL, "maxval is 0");
  expect_pgm_error("P5\n1 1\n70000\nab", -EINVAL, "1..65535");
  expect_pgm_error("P5\n0 3\n255\n", -EINVAL, "0x3");
  expect_pgm_error("P5\n5000 300\n255\n", -E2BIG, "5000x300");
  expect_pgm_error("P5\n99999999999999999999 1\n255\n", -E2BIG, "limit");
  expect_pgm_error("P2\n2 2\n255\n1 2 3", -EINVAL, "truncated");
  expect_pgm_error("P2\n2 1\n15\n1 16", -EINVAL, "above maxval");
  expect_pgm_error("P2\n2 1\n15\n1 x", -EINVAL, "not a decimal");
  expect_pgm_error("P2\n2 1\n15\n1 99999999999", -EINVAL, "above maxval");
  expect_pgm_error("P5\n1 1\n3\n\x07", -EINVAL, "above maxval");
  expect_pgm_error("P5\nx 1\n255\n", -EINVAL, "width");
  expect_pgm_error("P54 4\n255\n", -EINVAL, "whitespace");
  expect_pgm_error("P5\n4 4\n255x", -EINVAL, "whitespace");
  expect_pgm_error("P6\n1 1\n255\nabc", -EINVAL, "P5");
  expect_pgm_error("P", -EINVAL, NULL);
  expect_pgm_error("", -EINVAL, NULL);
  expect_pgm_error("P5 # only a comment", -EINVAL, "missing");
}

/* Every prefix of a valid PGM fails cleanly (ASan checks the reads). */
static void test_pgm_all_prefixes(void **state) {
  (void)state;
  const char *texts[] = {
      "P5\n# c\n3 2\n255\nABCDEF",
      "P2 3 2 255 1 2 3 4 5 6",
  };
  for (size_t t = 0; t < 2; t++) {
    size_t full = strlen(texts[t]);
    for (size_t n = 0; n < full; n++) {
      uint8_t *b = malloc(n ? n : 1);
      assert_non_null(b);
      memcpy(b, texts[t], n);
      srv_gray g = {0, 0, NULL};
      int rc = srv_image_decode_pgm(b, n, &g, NULL, 0);
      /* every proper prefix lacks at least one sample */
      assert_int_equal(rc, -EINVAL);
      assert_null(g.px);
      free(b);
    }
    srv_gray g = {0, 0, NULL};
    assert_int_equal(srv_image_decode_pgm((const uint8_t *)texts[t], full, &g,
                                          NULL, 0), 0);
    srv_gray_free(&g);
  }
}

/* ------------------------------------------------------------ raw, sniffing */

static void test_raw_and_sniff(void **state) {
  (void)state;
  size_t n = 99;
  char msg[256];
  assert_int_equal(srv_image_raw_count(784 * 3, &n, msg, sizeof msg), 0);
  assert_int_equal(n, 3);
  assert_int_equal(srv_image_raw_count(785, &n, msg, sizeof msg), -EINVAL);
  assert_int_equal(n, 0);
  assert_non_null(strstr(msg, "785"));
  assert_int_equal(srv_image_raw_count(0, &n, NULL, 0), -EINVAL);

  uint8_t raw[784 * 2];
  memset(raw, 0, sizeof raw);
  raw[14 * 28 + 14] = 200;
  raw[0] = 'P'; /* raw pixels that happen to look like a PGM magic */
  raw[1] = '5';
  raw[2] = '\n';
  uint8_t out[784];
  int empty = -1;
  assert_int_equal(srv_image_from_bytes("Application/Octet-Stream; foo=bar", raw,
                                        784, out, &empty, msg, sizeof msg), 0);
  assert_memory_equal(out, raw, 784); /* untouched, no preprocessing */
  assert_int_equal(empty, 0);
  assert_int_equal(srv_image_sniff(NULL, raw, 784), SRV_IMAGE_PGM);
  raw[0] = 0;
  raw[1] = 0;
  raw[2] = 0;
  assert_int_equal(srv_image_sniff(NULL, raw, 784), SRV_IMAGE_RAW);
  assert_int_equal(srv_image_from_bytes(NULL, raw, 784, out, &empty, NULL, 0), 0);
  assert_memory_equal(out, raw, 784);

  /* an all-background raw image is flagged empty */
  memset(raw, 3, 784);
  assert_int_equal(srv_image_from_bytes(NULL, raw, 784, out, &empty, NULL, 0), 0);
  assert_int_equal(empty, 1);

  /* a batch is for srv_image_raw_count, not for the one-image call */
  memset(out, 0x55, sizeof out);
  empty = 7;
  assert_int_equal(srv_image_from_bytes(NULL, raw, sizeof raw, out, &empty, msg,
                                        sizeof msg), -EINVAL);
  assert_non_null(strstr(msg, "2 images"));
  assert_int_equal(out[0], 0x55); /* untouched on failure */
  assert_int_equal(empty, 7);
  assert_int_equal(srv_image_from_bytes("application/octet-stream", raw, 1000,
                                        out, &empty, msg, sizeof msg), -EINVAL);
  assert_non_null(strstr(msg, "1000"));

  /* content types */
  const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  assert_int_equal(srv_image_sniff("application/octet-stream", sig, 8), SRV_IMAGE_PNG);
  assert_int_equal(srv_image_sniff(" IMAGE/PNG ; q=1", raw, 5), SRV_IMAGE_PNG);
  assert_int_equal(srv_image_sniff("image/pngx", raw, 5), SRV_IMAGE_UNKNOWN);
  assert_int_equal(srv_image_sniff("image/x-portable-graymap", raw, 5), SRV_IMAGE_PGM);
  assert_int_equal(srv_image_sniff("", NULL, 0), SRV_IMAGE_UNKNOWN);
  assert_int_equal(srv_image_sniff(NULL, (const uint8_t *)"P2", 2), SRV_IMAGE_UNKNOWN);
}

static void test_from_bytes_rejects(void **state) {
  (void)state;
  uint8_t out[784];
  int empty;
  char msg[256];
  const uint8_t junk[] = "\x01\x02garbage garbage garbage";
  assert_int_equal(srv_image_from_bytes(NULL, junk, sizeof junk, out, &empty, msg,
                                        sizeof msg), -ENOTSUP);
  assert_non_null(strstr(msg, "unrecognised"));
  const uint8_t jpeg[] = {0xff, 0xd8, 0xff, 0xe0, 0, 16, 'J', 'F', 'I', 'F'};
  assert_int_equal(srv_image_from_bytes("image/jpeg", jpeg, sizeof jpeg, out,
                                        &empty, msg, sizeof msg), -ENOTSUP);
  assert_non_null(strstr(msg, "JPEG"));
  assert_int_equal(srv_image_from_bytes(NULL, (const uint8_t *)"GIF89a", 6, out,
                                        &empty, msg, sizeof msg), -ENOTSUP);
  assert_non_null(strstr(msg, "GIF"));
  /* zero-size body */
  assert_int_equal(srv_image_from_bytes("image/png", (const uint8_t *)"", 0, out,
                                        &empty, msg, sizeof msg), -EINVAL);
  assert_non_null(strstr(msg, "empty"));
  assert_int_equal(srv_image_from_bytes(NULL, NULL, 0, out, &empty, NULL, 0),
                   -EINVAL);
  /* says PNG, is not */
  assert_int_equal(srv_image_from_bytes("image/png", junk, sizeof junk, out,
                                        &empty, msg, sizeof msg), -EINVAL);
  assert_non_null(strstr(msg, "signature"));
  assert_int_equal(srv_image_from_bytes(NULL, junk, sizeof junk, NULL, &empty,
                                        msg, sizeof msg), -EINVAL);
  /* a tiny message buffer is truncated, still terminated */
  char tiny[8];
  assert_int_equal(srv_image_from_bytes(NULL, junk, sizeof junk, out, &empty,
                                        tiny, sizeof tiny), -ENOTSUP);
  assert_int_equal(strlen(tiny), sizeof tiny - 1);
}

static void test_strerror(void **state) {
  (void)state;
  const int codes[] = {0, -EINVAL, -E2BIG, -ENOTSUP, -ENOMEM};
  for (size_t i = 0; i < 5; i++) {
    assert_non_null(srv_image_strerror(codes[i]));
    for (size_t j = 0; j < i; j++)
      assert_string_not_equal(srv_image_strerror(codes[i]),
                              srv_image_strerror(codes[j]));
  }
  assert_string_equal(srv_image_strerror(-12345), "unknown error");
}

/* ------------------------------------------------------------ preprocessing */

static void test_mnist_blob_centred_and_scaled(void **state) {
  (void)state;
  const uint32_t W = 200, H = 200;
  uint8_t *img = malloc(W * H);
  assert_non_null(img);
  fill(img, W, H, 255);
  draw_seven(img, W, 10, 120, 3, 0); /* 48x60, bottom-left, black on white */
  uint8_t out[784];
  int empty = -1;
  assert_int_equal(mnist_of(img, W, H, out, &empty), 0);
  assert_int_equal(empty, 0);
  double cx, cy;
  com28(out, &cx, &cy);
  if (fabs(cx - 14) > 1 || fabs(cy - 14) > 1) fail_msg("com (%f, %f)", cx, cy);
  int bw, bh;
  bbox28(out, 0, &bw, &bh);
  assert_true(bw <= 20 && bh <= 20);
  assert_true(bh >= 19); /* the longer side fills the 20 px box */
  assert_true(abs(bw - 16) <= 1); /* aspect 16:20 kept */
  /* solid areas stay solid: area averaging of a 3x3 block of ink */
  int full = 0;
  for (int i = 0; i < 784; i++) full += out[i] == 255;
  assert_true(full > 50);
  free(img);
}

static void test_mnist_shift_and_scale_invariant(void **state) {
  (void)state;
  const uint32_t W = 200, H = 200;
  uint8_t *img = malloc(W * H);
  assert_non_null(img);
  uint8_t a[784], b[784], c[784], d[784], f1[784], f2[784];
  int e;
  fill(img, W, H, 255);
  draw_seven(img, W, 10, 120, 3, 0);
  assert_int_equal(mnist_of(img, W, H, a, &e), 0);
  fill(img, W, H, 255);
  draw_seven(img, W, 131, 7, 3, 0); /* shifted */
  assert_int_equal(mnist_of(img, W, H, b, &e), 0);
  fill(img, W, H, 255);
  draw_seven(img, W, 30, 20, 8, 0); /* 128x160: scaled */
  assert_int_equal(mnist_of(img, W, H, c, &e), 0);
  fill(img, W, H, 255);
  draw_seven(img, W, 60, 60, 1, 0); /* 16x20: enlarged slightly */
  assert_int_equal(mnist_of(img, W, H, d, &e), 0);
  fill(img, W, H, 255);
  draw_seven(img, W, 17, 33, 4.7, 0); /* fractional scales: uneven strokes */
  assert_int_equal(mnist_of(img, W, H, f1, &e), 0);
  fill(img, W, H, 255);
  draw_seven(img, W, 101, 91, 2.3, 0);
  assert_int_equal(mnist_of(img, W, H, f2, &e), 0);
  double ab = mad28(a, b), ac = mad28(a, c), ad = mad28(a, d);
  double af1 = mad28(a, f1), af2 = mad28(a, f2);
  if (ab > 0.01 || ac > 0.5 || ad > 0.5 || af1 > 4 || af2 > 4)
    fail_msg("mean abs diff: shift %f, x8 %f, x1 %f, x4.7 %f, x2.3 %f", ab, ac,
             ad, af1, af2);
  double cx, cy;
  com28(f2, &cx, &cy);
  assert_true(fabs(cx - 14) <= 1 && fabs(cy - 14) <= 1);
  free(img);
}

static void test_mnist_empty(void **state) {
  (void)state;
  const uint32_t W = 200, H = 200;
  uint8_t *img = malloc(W * H);
  assert_non_null(img);
  uint8_t out[784];
  int empty = 0;
  fill(img, W, H, 255);
  memset(out, 0x77, sizeof out);
  assert_int_equal(mnist_of(img, W, H, out, &empty), 0);
  assert_int_equal(empty, 1);
  assert_true(all_zero(out, 784));
  /* faint paper texture (below the ink threshold) is still empty */
  for (size_t i = 0; i < (size_t)W * H; i += 7) img[i] = 245;
  empty = 0;
  assert_int_equal(mnist_of(img, W, H, out, &empty), 0);
  assert_int_equal(empty, 1);
  fill(img, W, H, 0); /* all black */
  empty = 0;
  assert_int_equal(mnist_of(img, W, H, out, &empty), 0);
  assert_int_equal(empty, 1);
  assert_true(all_zero(out, 784));
  free(img);
}

static void test_mnist_inversion_symmetric(void **state) {
  (void)state;
  const uint32_t W = 150, H = 120;
  uint8_t *bow = malloc(W * H), *wob = malloc(W * H);
  assert_non_null(bow);
  assert_non_null(wob);
  fill(bow, W, H, 255);
  draw_seven(bow, W, 70, 10, 4, 0);
  bow[(size_t)9 * W + 80] = 128; /* a grey edge pixel */
  for (size_t i = 0; i < (size_t)W * H; i++) wob[i] = (uint8_t)(255 - bow[i]);
  uint8_t a[784], b[784];
  int ea, eb;
  assert_int_equal(mnist_of(bow, W, H, a, &ea), 0);
  assert_int_equal(mnist_of(wob, W, H, b, &eb), 0);
  assert_int_equal(ea, 0);
  assert_int_equal(eb, 0);
  assert_memory_equal(a, b, 784);
  free(bow);
  free(wob);
}

/* Grey pencil on grey paper looks like MNIST after background removal and
 * stretching; and a stroke running off the edge does not flip the decision
 * about which side is ink. */
static void test_mnist_low_contrast_and_edge_stroke(void **state) {
  (void)state;
  const uint32_t W = 100, H = 100;
  uint8_t *img = malloc(W * H);
  assert_non_null(img);
  fill(img, W, H, 200);
  draw_seven(img, W, 20, 20, 3, 110);
  rect(img, W, 0, 90, 100, 10, 110); /* a line along the bottom edge */
  uint8_t out[784];
  int empty;
  assert_int_equal(mnist_of(img, W, H, out, &empty), 0);
  assert_int_equal(empty, 0);
  int maxv = 0;
  for (int i = 0; i < 784; i++) maxv = out[i] > maxv ? out[i] : maxv;
  assert_int_equal(maxv, 255);
  assert_int_equal(out[0], 0);
  free(img);
}

static void test_mnist_28x28_rules(void **state) {
  (void)state;
  uint8_t img[784], out[784];
  int empty;
  /* dark background: MNIST-ready, passed through even if off-centre */
  memset(img, 0, sizeof img);
  rect(img, 28, 1, 1, 5, 9, 255);
  img[3] = 100;
  assert_int_equal(mnist_of(img, 28, 28, out, &empty), 0);
  assert_memory_equal(out, img, 784);
  assert_int_equal(empty, 0);
  memset(img, 9, sizeof img);
  assert_int_equal(mnist_of(img, 28, 28, out, &empty), 0);
  assert_int_equal(empty, 1);
  assert_memory_equal(out, img, 784);
  /* light background: fully preprocessed (inverted, centred, scaled) */
  memset(img, 255, sizeof img);
  rect(img, 28, 1, 1, 5, 9, 0);
  assert_int_equal(mnist_of(img, 28, 28, out, &empty), 0);
  assert_int_equal(empty, 0);
  double cx, cy;
  com28(out, &cx, &cy);
  assert_true(fabs(cx - 14) <= 1 && fabs(cy - 14) <= 1);
  int bw, bh;
  bbox28(out, 0, &bw, &bh);
  assert_int_equal(bh, 20);
  assert_true(abs(bw - 11) <= 1); /* 5:9 of 20 is 11.1 */
}

static void test_mnist_odd_shapes(void **state) {
  (void)state;
  uint8_t out[784];
  int empty;
  /* 1x1 */
  uint8_t one = 255;
  assert_int_equal(mnist_of(&one, 1, 1, out, &empty), 0);
  /* a 1-pixel-wide line, both ways, at full size */
  uint8_t *line = malloc(SRV_IMAGE_MAX_SIDE);
  assert_non_null(line);
  memset(line, 0, SRV_IMAGE_MAX_SIDE);
  line[1000] = 255;
  line[3000] = 255;
  assert_int_equal(mnist_of(line, SRV_IMAGE_MAX_SIDE, 1, out, &empty), 0);
  assert_int_equal(mnist_of(line, 1, SRV_IMAGE_MAX_SIDE, out, &empty), 0);
  free(line);
  /* two dots in opposite corners of a big canvas: no crash, and since the
   * ink averages away it counts as empty */
  const uint32_t W = 2000, H = 2000;
  uint8_t *img = malloc((size_t)W * H);
  assert_non_null(img);
  fill(img, W, H, 255);
  img[(size_t)5 * W + 5] = 0;
  img[(size_t)1990 * W + 1990] = 0;
  assert_int_equal(mnist_of(img, W, H, out, &empty), 0);
  assert_int_equal(empty, 1);
  /* one dot: a blob of ink (MNIST scaling makes a dot fill the box) */
  img[(size_t)1990 * W + 1990] = 255;
  assert_int_equal(mnist_of(img, W, H, out, &empty), 0);
  assert_int_equal(empty, 0);
  free(img);
}

static void test_mnist_bad_args(void **state) {
  (void)state;
  uint8_t px[4] = {0}, out[784];
  int empty = 5;
  srv_gray g = {2, 2, px};
  assert_int_equal(srv_image_to_mnist(NULL, out, &empty), -EINVAL);
  assert_int_equal(srv_image_to_mnist(&g, NULL, &empty), -EINVAL);
  assert_int_equal(srv_image_to_mnist(&g, out, NULL), -EINVAL);
  g.w = 0;
  assert_int_equal(srv_image_to_mnist(&g, out, &empty), -EINVAL);
  g.w = 2;
  g.px = NULL;
  assert_int_equal(srv_image_to_mnist(&g, out, &empty), -EINVAL);
  g.px = px;
  g.h = SRV_IMAGE_MAX_SIDE + 1;
  assert_int_equal(srv_image_to_mnist(&g, out, &empty), -E2BIG);
  assert_int_equal(empty, 5);
}

/* Bilinear sample of a 28x28 digit at continuous source coordinates
 * (pixel centres at integers); outside the digit is background. */
static double bilinear28(const uint8_t *d, double u, double v) {
  int x0 = (int)floor(u), y0 = (int)floor(v);
  double fx = u - x0, fy = v - y0, acc = 0;
  for (int j = 0; j < 2; j++)
    for (int i = 0; i < 2; i++) {
      int x = x0 + i, y = y0 + j;
      if (x < 0 || x >= 28 || y < 0 || y >= 28) continue;
      acc += (i ? fx : 1 - fx) * (j ? fy : 1 - fy) * d[y * 28 + x];
    }
  return acc;
}

static FILE *open_mnist_test_images(void) {
  const char *paths[] = {"data/mnist/t10k-images-idx3-ubyte",
                         "../data/mnist/t10k-images-idx3-ubyte"};
  for (size_t i = 0; i < 2; i++) {
    FILE *f = fopen(paths[i], "rb");
    if (f != NULL) return f;
  }
  return NULL;
}

/* Real MNIST digits, drawn as a user would (black on white, much larger,
 * sent as PNG), come back close to the originals. Two drawings per digit:
 * the brief's 280x280 (nearest-neighbour x10, which MNIST's own box filter
 * must undo exactly) and an off-centre bilinear x7.3 on a 400x300 pad
 * (fractional coverage everywhere). */
static void test_mnist_real_digits_roundtrip(void **state) {
  (void)state;
  FILE *f = open_mnist_test_images();
  if (f == NULL) {
    skip();
    return;
  }
  uint8_t hdr[16];
  const int N = 40;
  uint8_t *digits = malloc((size_t)N * 784);
  assert_non_null(digits);
  assert_int_equal(fread(hdr, 1, 16, f), 16);
  assert_int_equal(rd32(hdr), 0x00000803);
  assert_int_equal(fread(digits, 784, (size_t)N, f), (size_t)N);
  fclose(f);

  const uint32_t S = 280, PW = 400, PH = 300;
  const double K = 7.3, OX = 37, OY = 12;
  uint8_t *big = malloc((size_t)PW * PH);
  assert_non_null(big);
  for (int variant = 0; variant < 2; variant++) {
    double sum_mad = 0;
    for (int n = 0; n < N; n++) {
      const uint8_t *d = digits + (size_t)n * 784;
      uint32_t w, h;
      if (variant == 0) {
        w = h = S;
        for (uint32_t y = 0; y < S; y++)
          for (uint32_t x = 0; x < S; x++)
            big[(size_t)y * S + x] = (uint8_t)(255 - d[(y / 10) * 28 + x / 10]);
      } else {
        w = PW;
        h = PH;
        for (uint32_t y = 0; y < PH; y++)
          for (uint32_t x = 0; x < PW; x++) {
            double u = (x - OX + 0.5) / K - 0.5, v = (y - OY + 0.5) / K - 0.5;
            double ink = bilinear28(d, u, v);
            big[(size_t)y * PW + x] = (uint8_t)(255 - floor(ink + 0.5));
          }
      }
      size_t len;
      uint8_t *png = enc_gray8(big, w, h, &len);
      uint8_t out[784];
      int empty;
      char msg[256];
      assert_int_equal(srv_image_from_bytes("image/png", png, len, out, &empty,
                                            msg, sizeof msg), 0);
      free(png);
      assert_int_equal(empty, 0);
      double cx, cy, ox, oy;
      com28(out, &cx, &cy);
      com28(d, &ox, &oy);
      double m = mad28_aligned(out, d, 1);
      sum_mad += m;
      if (fabs(cx - 14) > 1 || fabs(cy - 14) > 1 || m > (variant ? 20 : 2))
        fail_msg("variant %d digit %d: com (%.2f, %.2f), original (%.2f, %.2f), "
                 "aligned mad %.2f", variant, n, cx, cy, ox, oy, m);
      /* Recognisable: nearer its own original than any other test digit
       * (bilinear drawing blurs and widens strokes a little, so the bar
       * for variant 1 is relative rather than absolute). */
      for (int o = 0; o < N; o++) {
        if (o == n) continue;
        double mo = mad28_aligned(out, digits + (size_t)o * 784, 1);
        if (mo <= m)
          fail_msg("variant %d digit %d: closer to digit %d (%.2f) than to "
                   "itself (%.2f)", variant, n, o, mo, m);
      }
    }
    if (sum_mad / N > (variant ? 10 : 1))
      fail_msg("variant %d: mean aligned mad %.2f", variant, sum_mad / N);
  }
  free(big);
  free(digits);
}


/* Issue 9 #22: a PGM header claiming 4096x4096 over a handful of bytes is
 * refused before w*h bytes are allocated. The child has 8 MB of address
 * space to spare, less than the 16 MB raster: allocating first would
 * answer -ENOMEM instead of "truncated". */
static size_t vm_size_now(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  size_t kb = 0;
  if (!f) return 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmSize: %zu kB", &kb) == 1) break;
  fclose(f);
  return kb * 1024;
}

static void test_pgm_bytes_before_memory(void **state) {
  (void)state;
  static const char *const bodies[] = {"P5\n4096 4096\n255\n\x01\x02\x03",
                                       "P2\n4096 4096\n255\n1 2 3\n"};
  for (int k = 0; k < 2; k++) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      struct rlimit rl;
      rl.rlim_cur = rl.rlim_max = vm_size_now() + ((size_t)8 << 20);
      if (setrlimit(RLIMIT_AS, &rl)) _exit(3);
      srv_gray g;
      char msg[256];
      int rc = srv_image_decode_pgm((const uint8_t *)bodies[k], strlen(bodies[k]), &g, msg,
                                    sizeof msg);
      if (rc == -EINVAL && strstr(msg, "truncated")) _exit(0);
      fprintf(stderr, "P%c: rc %d: %s\n", k ? '2' : '5', rc, msg);
      _exit(1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_png_gray8_exact),
      cmocka_unit_test(test_png_rgb8_luma),
      cmocka_unit_test(test_png_rgba_canvas_black_strokes),
      cmocka_unit_test(test_png_rgba_canvas_white_strokes),
      cmocka_unit_test(test_png_fully_transparent_is_empty),
      cmocka_unit_test(test_png_gray16),
      cmocka_unit_test(test_png_gray_alpha_and_1bit),
      cmocka_unit_test(test_png_palette_trns),
      cmocka_unit_test(test_png_interlaced_matches),
      cmocka_unit_test(test_png_single_large_idat),
      cmocka_unit_test(test_png_huge_text_chunk),
      cmocka_unit_test(test_png_rejects_truncated),
      cmocka_unit_test(test_png_rejects_bad_crc_and_idat),
      cmocka_unit_test(test_png_rejects_oversized_and_zero),
      cmocka_unit_test(test_png_rejects_garbage),
      cmocka_unit_test(test_png_mutation_fuzz),
      cmocka_unit_test(test_pgm_p5_with_comments),
      cmocka_unit_test(test_pgm_p5_16bit_and_small_maxval),
      cmocka_unit_test(test_pgm_p2_with_comments),
      cmocka_unit_test(test_pgm_rejects),
      cmocka_unit_test(test_pgm_all_prefixes),
      cmocka_unit_test(test_raw_and_sniff),
      cmocka_unit_test(test_from_bytes_rejects),
      cmocka_unit_test(test_strerror),
      cmocka_unit_test(test_mnist_blob_centred_and_scaled),
      cmocka_unit_test(test_mnist_shift_and_scale_invariant),
      cmocka_unit_test(test_mnist_empty),
      cmocka_unit_test(test_mnist_inversion_symmetric),
      cmocka_unit_test(test_mnist_low_contrast_and_edge_stroke),
      cmocka_unit_test(test_mnist_28x28_rules),
      cmocka_unit_test(test_mnist_odd_shapes),
      cmocka_unit_test(test_mnist_bad_args),
      cmocka_unit_test(test_mnist_real_digits_roundtrip),
      cmocka_unit_test(test_pgm_bytes_before_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
