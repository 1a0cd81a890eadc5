/*
 * test_idx.c — IDX readers and data set loading (core/idx.c).
 *
 * Small IDX files, valid and broken in one way each, are written into a
 * temporary directory (plain and gzip) and read back. When MNISTD_DATA
 * names the data directory (as `make unit` does), the real MNIST and
 * Fashion-MNIST files are loaded too; otherwise those tests are skipped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "nn.h"

#define PATH_LEN 1024

/* The temporary directory of this run, made by the group setup. */
static char g_dir[PATH_LEN];

/* ---------------------------------------------------------------- helpers */

static void tpath(char *out, const char *name) {
  int len = snprintf(out, PATH_LEN, "%s/%s", g_dir, name);
  assert_true(len > 0 && len < PATH_LEN);
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* A deterministic, not too compressible pixel pattern. */
static uint8_t pixel(size_t i) {
  return (uint8_t)((i * 37u) ^ (i >> 7) ^ ((i * i) >> 5));
}

/* Builds an IDX file in memory: the 4 magic bytes as given, ndims u32
 * dimensions, then `payload` bytes of pixel() (or of label i % 10 when
 * labels is set). Returns the malloc'd buffer; *len its size. */
static uint8_t *idx_build(uint8_t type, uint8_t ndims, const uint32_t *dims,
                          size_t payload, int labels, size_t *len) {
  size_t hdr = 4 + 4 * (size_t)ndims, i;
  uint8_t *buf = malloc(hdr + payload + 1);

  assert_non_null(buf);
  buf[0] = 0;
  buf[1] = 0;
  buf[2] = type;
  buf[3] = ndims;
  for (i = 0; i < ndims; i++)
    put_be32(buf + 4 + 4 * i, dims[i]);
  for (i = 0; i < payload; i++)
    buf[hdr + i] = labels ? (uint8_t)(i % 10) : pixel(i);
  *len = hdr + payload;
  return buf;
}

static uint8_t *images_build(uint32_t n, uint32_t rows, uint32_t cols,
                             size_t *len) {
  uint32_t dims[3] = {n, rows, cols};
  return idx_build(0x08, 3, dims, (size_t)n * rows * cols, 0, len);
}

static uint8_t *labels_build(uint32_t n, size_t *len) {
  uint32_t dims[1] = {n};
  return idx_build(0x08, 1, dims, n, 1, len);
}

static void write_plain(const char *path, const void *buf, size_t len) {
  FILE *f = fopen(path, "wb");

  assert_non_null(f);
  assert_int_equal(fwrite(buf, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

static void write_gz(const char *path, const void *buf, size_t len) {
  gzFile gz = gzopen(path, "wb");

  assert_non_null(gz);
  if (len > 0)
    assert_int_equal(gzwrite(gz, buf, (unsigned)len), (int)len);
  assert_int_equal(gzclose(gz), Z_OK);
}

/* Writes buf to name (in the temp dir) plain or gzip; path gets the path. */
static void put(char *path, const char *name, const void *buf, size_t len,
                int gzip) {
  tpath(path, name);
  if (gzip)
    write_gz(path, buf, len);
  else
    write_plain(path, buf, len);
}

static uint8_t *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf;
  long size;

  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  size = ftell(f);
  assert_true(size > 0);
  rewind(f);
  buf = malloc((size_t)size);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
  fclose(f);
  *len = (size_t)size;
  return buf;
}

/* Expects nn_idx_read_images(path) to fail with code, with outputs reset,
 * err filled, and the path (and each given fragment) in the message. */
static void expect_images_fail(const char *path, int code,
                               const char *frag1, const char *frag2) {
  uint8_t sentinel = 0;
  uint8_t *images = &sentinel;
  uint32_t n = 7, rows = 7, cols = 7;
  nn_err err;
  int rc;

  memset(&err, 0, sizeof(err));
  rc = nn_idx_read_images(path, &images, &n, &rows, &cols, &err);
  if (rc != code)
    fail_msg("%s: expected %d, got %d (%s)", path, code, rc, err.msg);
  assert_int_equal(err.code, code);
  assert_null(images);
  assert_int_equal(n, 0);
  assert_int_equal(rows, 0);
  assert_int_equal(cols, 0);
  if (strstr(err.msg, path) == NULL)
    fail_msg("message lacks the path: %s", err.msg);
  if (frag1 != NULL && strstr(err.msg, frag1) == NULL)
    fail_msg("message lacks \"%s\": %s", frag1, err.msg);
  if (frag2 != NULL && strstr(err.msg, frag2) == NULL)
    fail_msg("message lacks \"%s\": %s", frag2, err.msg);
  /* A NULL err must be accepted and give the same code. */
  assert_int_equal(nn_idx_read_images(path, &images, &n, &rows, &cols, NULL),
                   code);
}

static void expect_labels_fail(const char *path, int code, const char *frag1,
                               const char *frag2) {
  uint8_t sentinel = 0;
  uint8_t *labels = &sentinel;
  uint32_t n = 7;
  nn_err err;
  int rc;

  memset(&err, 0, sizeof(err));
  rc = nn_idx_read_labels(path, &labels, &n, &err);
  if (rc != code)
    fail_msg("%s: expected %d, got %d (%s)", path, code, rc, err.msg);
  assert_int_equal(err.code, code);
  assert_null(labels);
  assert_int_equal(n, 0);
  if (strstr(err.msg, path) == NULL)
    fail_msg("message lacks the path: %s", err.msg);
  if (frag1 != NULL && strstr(err.msg, frag1) == NULL)
    fail_msg("message lacks \"%s\": %s", frag1, err.msg);
  if (frag2 != NULL && strstr(err.msg, frag2) == NULL)
    fail_msg("message lacks \"%s\": %s", frag2, err.msg);
  assert_int_equal(nn_idx_read_labels(path, &labels, &n, NULL), code);
}

static void assert_zeroed(const nn_dataset *ds) {
  assert_int_equal(ds->n, 0);
  assert_int_equal(ds->rows, 0);
  assert_int_equal(ds->cols, 0);
  assert_null(ds->images);
  assert_null(ds->labels);
}

/* ---------------------------------------------------------------- valid */

static void check_images_roundtrip(int gzip) {
  static const uint32_t shapes[][3] = {{3, 28, 28}, {2, 5, 7}, {1, 1, 1}};
  size_t s;

  for (s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
    char path[PATH_LEN], name[64];
    uint8_t *file, *images = NULL;
    uint32_t n = 0, rows = 0, cols = 0;
    size_t len;
    nn_err err;

    snprintf(name, sizeof(name), "ok-%zu-images%s", s, gzip ? ".gz" : "");
    file = images_build(shapes[s][0], shapes[s][1], shapes[s][2], &len);
    put(path, name, file, len, gzip);
    assert_int_equal(nn_idx_read_images(path, &images, &n, &rows, &cols, &err),
                     0);
    assert_int_equal(n, shapes[s][0]);
    assert_int_equal(rows, shapes[s][1]);
    assert_int_equal(cols, shapes[s][2]);
    assert_non_null(images);
    assert_memory_equal(images, file + 16, len - 16);
    free(images);
    free(file);
  }
}

static void test_images_plain(void **state) {
  (void)state;
  check_images_roundtrip(0);
}

static void test_images_gzip(void **state) {
  (void)state;
  check_images_roundtrip(1);
}

static void test_labels_plain_and_gzip(void **state) {
  int gzip;

  (void)state;
  for (gzip = 0; gzip <= 1; gzip++) {
    char path[PATH_LEN];
    uint8_t *file, *labels = NULL;
    uint32_t n = 0;
    size_t len;
    nn_err err;

    file = labels_build(25, &len);
    put(path, gzip ? "ok-labels.gz" : "ok-labels", file, len, gzip);
    assert_int_equal(nn_idx_read_labels(path, &labels, &n, &err), 0);
    assert_int_equal(n, 25);
    assert_memory_equal(labels, file + 8, 25);
    free(labels);
    free(file);
  }
}

/* A gzip file whose name does not end in .gz and a plain file whose name
 * does are both read by content. */
static void test_detect_by_content(void **state) {
  char path[PATH_LEN];
  uint8_t *file, *images = NULL;
  uint32_t n, rows, cols;
  size_t len;

  (void)state;
  file = images_build(2, 28, 28, &len);
  put(path, "gzip-without-suffix", file, len, 1);
  assert_int_equal(nn_idx_read_images(path, &images, &n, &rows, &cols, NULL),
                   0);
  assert_memory_equal(images, file + 16, len - 16);
  free(images);
  put(path, "plain-with-suffix.gz", file, len, 0);
  assert_int_equal(nn_idx_read_images(path, &images, &n, &rows, &cols, NULL),
                   0);
  assert_memory_equal(images, file + 16, len - 16);
  free(images);
  free(file);
}

/* ---------------------------------------------------------------- header */

static void test_bad_magic(void **state) {
  char path[PATH_LEN];
  uint8_t *file;
  size_t len;
  int gzip;

  (void)state;
  for (gzip = 0; gzip <= 1; gzip++) {
    file = images_build(2, 28, 28, &len);
    file[0] = 0x12;
    file[1] = 0x34;
    put(path, gzip ? "bad-magic.gz" : "bad-magic", file, len, gzip);
    expect_images_fail(path, NN_EFORMAT, "magic", "0x12340803");
    expect_labels_fail(path, NN_EFORMAT, "magic", NULL);
    free(file);
  }
  /* Text, as when an HTML error page was saved instead of the data. */
  put(path, "html", "<html>404</html>\n", 17, 0);
  expect_images_fail(path, NN_EFORMAT, "not an IDX file", NULL);
}

static void test_bad_type(void **state) {
  static const uint8_t types[] = {0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF};
  char path[PATH_LEN];
  size_t t;

  (void)state;
  for (t = 0; t < sizeof(types); t++) {
    uint32_t dims[3] = {2, 28, 28};
    char frag[16];
    uint8_t *file;
    size_t len;

    file = idx_build(types[t], 3, dims, 2 * 28 * 28, 0, &len);
    put(path, "bad-type", file, len, 0);
    snprintf(frag, sizeof(frag), "0x%02x", types[t]);
    expect_images_fail(path, NN_EFORMAT, "data type", frag);
    free(file);

    file = idx_build(types[t], 1, dims, 2, 1, &len);
    put(path, "bad-type-labels.gz", file, len, 1);
    expect_labels_fail(path, NN_EFORMAT, "data type", frag);
    free(file);
  }
}

static void test_bad_dim_count(void **state) {
  static const uint8_t counts[] = {0, 1, 2, 4, 255};
  uint32_t dims[4] = {2, 28, 28, 1};
  char path[PATH_LEN];
  uint8_t *file;
  size_t c, len;

  (void)state;
  for (c = 0; c < sizeof(counts); c++) {
    file = idx_build(0x08, 3, dims, 2 * 28 * 28, 0, &len);
    file[3] = counts[c];
    put(path, "bad-dims", file, len, 0);
    expect_images_fail(path, NN_EFORMAT, "dimension", "expected 3");
    free(file);
  }
  /* The swapped-paths mistake gets a hint. */
  file = labels_build(10, &len);
  put(path, "labels-as-images", file, len, 0);
  expect_images_fail(path, NN_EFORMAT, "expected 3", "label file");
  free(file);
  file = images_build(10, 28, 28, &len);
  put(path, "images-as-labels.gz", file, len, 1);
  expect_labels_fail(path, NN_EFORMAT, "expected 1", "image file");
  free(file);
}

static void test_zero_dims(void **state) {
  char path[PATH_LEN];
  uint8_t *file;
  size_t d, len;

  (void)state;
  for (d = 0; d < 3; d++) {
    uint32_t dims[3] = {2, 28, 28};

    dims[d] = 0;
    file = idx_build(0x08, 3, dims, 0, 0, &len);
    put(path, "zero-dim", file, len, 0);
    expect_images_fail(path, NN_EFORMAT, "is 0", NULL);
    free(file);
  }
  file = labels_build(0, &len);
  put(path, "zero-labels", file, len, 0);
  expect_labels_fail(path, NN_EFORMAT, "label count is 0", NULL);
  free(file);
}

/* Headers that ask for more than the limits must be refused from the
 * header alone: the files are tiny, so a reader that allocated and read
 * first would report truncation instead. */
static void test_too_big(void **state) {
  static const uint32_t shapes[][3] = {
      {0xFFFFFFFFu, 28, 28},               /* count beyond the item limit */
      {NN_IDX_MAX_ITEMS + 1u, 1, 1},       /* just beyond it */
      {NN_IDX_MAX_ITEMS, 28, 28},          /* 7.8 GB of pixels */
      {1, 0xFFFFFFFFu, 0xFFFFFFFFu},       /* product overflows 64 bits */
      {1000, 65536, 65536},                /* 4.3e12 bytes */
      {1, 32768, 32769},                   /* 1 GiB + 32768 bytes */
  };
  char path[PATH_LEN];
  uint8_t *file;
  size_t s, len;
  int gzip;

  (void)state;
  for (gzip = 0; gzip <= 1; gzip++) {
    for (s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
      file = idx_build(0x08, 3, shapes[s], 100, 0, &len);
      put(path, gzip ? "huge.gz" : "huge", file, len, gzip);
      expect_images_fail(path, NN_ETOOBIG, "limit", NULL);
      free(file);
    }
    {
      uint32_t dims[1] = {NN_IDX_MAX_ITEMS + 1u};

      file = idx_build(0x08, 1, dims, 100, 1, &len);
      put(path, gzip ? "huge-labels.gz" : "huge-labels", file, len, gzip);
      expect_labels_fail(path, NN_ETOOBIG, "limit", NULL);
      free(file);
    }
  }
  /* Exactly at the byte limit is allowed; this plain file then fails as
   * truncated, found from its size before any allocation. */
  {
    uint32_t dims[3] = {1, 32768, 32768};

    file = idx_build(0x08, 3, dims, 10, 0, &len);
    put(path, "at-limit", file, len, 0);
    expect_images_fail(path, NN_ETRUNC, "header says 1073741824 pixel bytes",
                       "file has 10");
    free(file);
  }
}

/* ---------------------------------------------------------------- size */

static void test_truncated(void **state) {
  char path[PATH_LEN];
  uint8_t *file;
  size_t len;
  int gzip;

  (void)state;
  for (gzip = 0; gzip <= 1; gzip++) {
    /* Payload short: 3 images declared, 1000 pixel bytes present. */
    file = images_build(3, 28, 28, &len);
    put(path, gzip ? "short.gz" : "short", file, 16 + 1000, gzip);
    expect_images_fail(path, NN_ETRUNC, "header says 2352 pixel bytes",
                       "file has 1000");
    /* Header short. */
    put(path, gzip ? "short-hdr.gz" : "short-hdr", file, 10, gzip);
    expect_images_fail(path, NN_ETRUNC, "header is 16 bytes", "file has 10");
    /* Nothing at all. */
    put(path, gzip ? "empty.gz" : "empty", file, 0, gzip);
    expect_images_fail(path, NN_ETRUNC, "file has 0", NULL);
    /* One byte missing. */
    put(path, gzip ? "short1.gz" : "short1", file, len - 1, gzip);
    expect_images_fail(path, NN_ETRUNC, "file has 2351", NULL);
    free(file);

    file = labels_build(100, &len);
    put(path, gzip ? "short-labels.gz" : "short-labels", file, len - 40, gzip);
    expect_labels_fail(path, NN_ETRUNC, "header says 100 label bytes",
                       "file has 60");
    free(file);
  }
}

static void test_trailing(void **state) {
  char path[PATH_LEN];
  uint8_t *file;
  size_t len;
  int gzip;

  (void)state;
  for (gzip = 0; gzip <= 1; gzip++) {
    file = images_build(2, 28, 28, &len);
    file[len] = 0; /* idx_build leaves one spare byte */
    put(path, gzip ? "trailing.gz" : "trailing", file, len + 1, gzip);
    expect_images_fail(path, NN_EFORMAT, "trailing", "1568 pixel bytes");
    free(file);

    file = labels_build(5, &len);
    file[len] = 3;
    put(path, gzip ? "trailing-labels.gz" : "trailing-labels", file, len + 1,
        gzip);
    expect_labels_fail(path, NN_EFORMAT, "trailing", NULL);
    free(file);
  }
}

/* ---------------------------------------------------------------- labels */

static void test_label_out_of_range(void **state) {
  static const uint8_t bad[] = {10, 11, 128, 255};
  char path[PATH_LEN];
  size_t b;
  int gzip;

  (void)state;
  for (gzip = 0; gzip <= 1; gzip++) {
    for (b = 0; b < sizeof(bad); b++) {
      char frag[32];
      uint8_t *file;
      size_t len;

      file = labels_build(20, &len);
      file[8 + 7] = bad[b];
      put(path, gzip ? "bad-label.gz" : "bad-label", file, len, gzip);
      snprintf(frag, sizeof(frag), "is %u", bad[b]);
      expect_labels_fail(path, NN_EFORMAT, "index 7", frag);
      free(file);
    }
  }
}

/* ---------------------------------------------------------------- files */

static void test_missing(void **state) {
  char path[PATH_LEN];

  (void)state;
  tpath(path, "does-not-exist");
  expect_images_fail(path, NN_ENOENT, NULL, NULL);
  expect_labels_fail(path, NN_ENOENT, NULL, NULL);
  tpath(path, "no-such-dir/file");
  expect_images_fail(path, NN_ENOENT, NULL, NULL);
}

static void test_directory_path(void **state) {
  (void)state;
  expect_images_fail(g_dir, NN_EIO, "directory", NULL);
}

/* Flips one byte at a time across the compressed data and trailer of a
 * gzip file: every variant must fail cleanly (the sanitizers and valgrind
 * runs check "cleanly"). The 10-byte gzip header is skipped: its mtime and
 * OS bytes are legitimately ignored by readers. */
static void test_corrupt_gzip(void **state) {
  char path[PATH_LEN], bad_path[PATH_LEN];
  uint8_t *file, *gz, *images;
  size_t len, gz_len, off, step, tried = 0;
  uint32_t n, rows, cols;

  (void)state;
  file = images_build(40, 28, 28, &len);
  put(path, "good.gz", file, len, 1);
  gz = slurp(path, &gz_len);
  assert_true(gz_len > 100);
  tpath(bad_path, "corrupt.gz");
  step = gz_len / 300 + 1;
  for (off = 10; off < gz_len; off += (off < gz_len - 16 ? step : 1)) {
    nn_err err;
    int rc;

    gz[off] ^= 0xFF;
    write_plain(bad_path, gz, gz_len);
    gz[off] ^= 0xFF;
    images = NULL;
    memset(&err, 0, sizeof(err));
    rc = nn_idx_read_images(bad_path, &images, &n, &rows, &cols, &err);
    if (rc != NN_EFORMAT && rc != NN_ETRUNC)
      fail_msg("flip at %zu of %zu: rc %d (%s)", off, gz_len, rc, err.msg);
    assert_int_equal(err.code, rc);
    assert_null(images);
    assert_non_null(strstr(err.msg, bad_path));
    tried++;
  }
  assert_true(tried > 250);

  /* The middle of the stream, explicitly: a data error. */
  memset(gz + gz_len / 2, 0xA5, 16);
  write_plain(bad_path, gz, gz_len);
  expect_images_fail(bad_path, NN_EFORMAT, "corrupt gzip", NULL);

  free(gz);
  free(file);
}

/* Writes a gzip file by hand: header, stored (uncompressed) deflate blocks
 * of at most 65535 bytes, then the CRC32 and length trailer, with crc_xor
 * applied to the CRC. Returns the file size. */
static size_t write_gz_stored(const char *path, const uint8_t *data,
                              size_t len, uint32_t crc_xor) {
  static const uint8_t header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
  uint32_t crc = (uint32_t)crc32(0L, data, (uInt)len) ^ crc_xor;
  uint8_t *out = malloc(10 + len + 5 * (len / 65535 + 1) + 8), *p = out;
  size_t off = 0, size;

  assert_non_null(out);
  memcpy(p, header, 10);
  p += 10;
  do {
    size_t block = len - off > 65535 ? 65535 : len - off;

    *p++ = off + block == len; /* BFINAL on the last block, BTYPE 00 */
    *p++ = (uint8_t)block;
    *p++ = (uint8_t)(block >> 8);
    *p++ = (uint8_t)~block;
    *p++ = (uint8_t)(~block >> 8);
    memcpy(p, data + off, block);
    p += block;
    off += block;
  } while (off < len);
  for (off = 0; off < 4; off++)
    *p++ = (uint8_t)(crc >> (8 * off));
  for (off = 0; off < 4; off++)
    *p++ = (uint8_t)((uint32_t)len >> (8 * off));
  size = (size_t)(p - out);
  write_plain(path, out, size);
  free(out);
  return size;
}

/* A bad CRC32 that zlib has not seen by the time the last pixel arrives.
 * zlib reads its input 256 KiB at a time (our gzbuffer) and decompresses
 * requests of 512 KiB or more straight into the caller's buffer, stopping
 * when that is full. With more than 1 MiB of data and the deflate data
 * ending exactly at a 256 KiB boundary of the file, the trailer is still
 * unread after the payload; only reading past it verifies the CRC.
 * 10 header bytes + 20 stored blocks (100 bytes) + 16 + 1310594 = 5 * 256 KiB.
 */
static void test_gzip_bad_crc_at_buffer_end(void **state) {
  char path[PATH_LEN];
  uint8_t *file, *images = NULL;
  uint32_t n, rows, cols;
  size_t len;

  (void)state;
  file = images_build(1, 1, 1310594, &len);
  tpath(path, "stored.gz");
  assert_int_equal(write_gz_stored(path, file, len, 0), 5 * 262144 + 8);
  assert_int_equal(nn_idx_read_images(path, &images, &n, &rows, &cols, NULL),
                   0);
  assert_int_equal(cols, 1310594);
  assert_memory_equal(images, file + 16, len - 16);
  free(images);

  write_gz_stored(path, file, len, 0x00010000u);
  expect_images_fail(path, NN_EFORMAT, "corrupt gzip", NULL);
  free(file);
}

/* Cut gzip files: in the data, and in the 8-byte CRC/length trailer after
 * all the data (which only the CRC check notices). */
static void test_cut_gzip(void **state) {
  char path[PATH_LEN], cut_path[PATH_LEN];
  uint8_t *file, *gz;
  size_t len, gz_len;

  (void)state;
  file = images_build(40, 28, 28, &len);
  put(path, "whole.gz", file, len, 1);
  gz = slurp(path, &gz_len);
  tpath(cut_path, "cut.gz");

  write_plain(cut_path, gz, gz_len / 2);
  expect_images_fail(cut_path, NN_ETRUNC, "header says 31360 pixel bytes",
                     "gzip stream ends early");
  write_plain(cut_path, gz, gz_len - 4);
  expect_images_fail(cut_path, NN_ETRUNC, "trailer", NULL);
  write_plain(cut_path, gz, gz_len - 8);
  expect_images_fail(cut_path, NN_ETRUNC, "trailer", NULL);
  write_plain(cut_path, gz, 12);
  expect_images_fail(cut_path, NN_ETRUNC, NULL, NULL);
  free(gz);
  free(file);
}

/* ---------------------------------------------------------------- dataset */

static void test_dataset_load(void **state) {
  char ipath[PATH_LEN], lpath[PATH_LEN];
  uint8_t *ifile, *lfile;
  size_t ilen, llen;
  nn_dataset ds;
  nn_err err;

  (void)state;
  ifile = images_build(12, 28, 28, &ilen);
  lfile = labels_build(12, &llen);
  put(ipath, "ds-images", ifile, ilen, 0);
  put(lpath, "ds-labels.gz", lfile, llen, 1);
  memset(&ds, 0xAB, sizeof(ds)); /* garbage in ds must not matter */
  assert_int_equal(nn_dataset_load(&ds, ipath, lpath, &err), 0);
  assert_int_equal(ds.n, 12);
  assert_int_equal(ds.rows, 28);
  assert_int_equal(ds.cols, 28);
  assert_memory_equal(ds.images, ifile + 16, 12 * 784);
  assert_memory_equal(ds.labels, lfile + 8, 12);

  nn_dataset_truncate(&ds, 100); /* larger: no-op */
  assert_int_equal(ds.n, 12);
  nn_dataset_truncate(&ds, 12);
  assert_int_equal(ds.n, 12);
  nn_dataset_truncate(&ds, 5);
  assert_int_equal(ds.n, 5);
  assert_memory_equal(ds.labels, lfile + 8, 5);
  nn_dataset_truncate(&ds, 0);
  assert_int_equal(ds.n, 0);
  nn_dataset_truncate(NULL, 3);

  nn_dataset_free(&ds);
  assert_zeroed(&ds);
  nn_dataset_free(&ds); /* zeroed: fine */
  nn_dataset_free(NULL);
  free(ifile);
  free(lfile);
}

static void test_dataset_count_mismatch(void **state) {
  char ipath[PATH_LEN], lpath[PATH_LEN];
  uint8_t *ifile, *lfile;
  size_t ilen, llen;
  nn_dataset ds;
  nn_err err;

  (void)state;
  ifile = images_build(3, 28, 28, &ilen);
  lfile = labels_build(2, &llen);
  put(ipath, "mm-images", ifile, ilen, 0);
  put(lpath, "mm-labels", lfile, llen, 0);
  memset(&ds, 0xAB, sizeof(ds));
  memset(&err, 0, sizeof(err));
  assert_int_equal(nn_dataset_load(&ds, ipath, lpath, &err), NN_EMISMATCH);
  assert_int_equal(err.code, NN_EMISMATCH);
  assert_zeroed(&ds);
  assert_non_null(strstr(err.msg, ipath));
  assert_non_null(strstr(err.msg, lpath));
  assert_non_null(strstr(err.msg, "3 images"));
  assert_non_null(strstr(err.msg, "2 labels"));
  free(ifile);
  free(lfile);
}

static void test_dataset_not_28x28(void **state) {
  static const uint32_t shapes[][2] = {{27, 28}, {28, 27}, {32, 32}, {1, 784}};
  char ipath[PATH_LEN], lpath[PATH_LEN];
  uint8_t *lfile;
  size_t s, llen;

  (void)state;
  lfile = labels_build(4, &llen);
  put(lpath, "n28-labels", lfile, llen, 0);
  for (s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
    char frag[32];
    uint8_t *ifile;
    size_t ilen;
    nn_dataset ds;
    nn_err err;

    ifile = images_build(4, shapes[s][0], shapes[s][1], &ilen);
    put(ipath, "n28-images", ifile, ilen, 0);
    memset(&ds, 0xAB, sizeof(ds));
    assert_int_equal(nn_dataset_load(&ds, ipath, lpath, &err), NN_EMISMATCH);
    assert_int_equal(err.code, NN_EMISMATCH);
    assert_zeroed(&ds);
    assert_non_null(strstr(err.msg, ipath));
    snprintf(frag, sizeof(frag), "%ux%u", shapes[s][0], shapes[s][1]);
    assert_non_null(strstr(err.msg, frag));
    free(ifile);
  }
  free(lfile);
}

/* Errors of either file come through with that file's path, ds zeroed. */
static void test_dataset_file_errors(void **state) {
  char ipath[PATH_LEN], lpath[PATH_LEN], missing[PATH_LEN];
  uint8_t *ifile, *lfile;
  size_t ilen, llen;
  nn_dataset ds;
  nn_err err;

  (void)state;
  ifile = images_build(4, 28, 28, &ilen);
  lfile = labels_build(4, &llen);
  lfile[8 + 3] = 42;
  put(ipath, "fe-images", ifile, ilen, 0);
  put(lpath, "fe-labels", lfile, llen, 0);
  tpath(missing, "fe-missing");

  memset(&ds, 0xAB, sizeof(ds));
  assert_int_equal(nn_dataset_load(&ds, ipath, lpath, &err), NN_EFORMAT);
  assert_zeroed(&ds);
  assert_non_null(strstr(err.msg, lpath));
  assert_non_null(strstr(err.msg, "index 3"));

  memset(&ds, 0xAB, sizeof(ds));
  assert_int_equal(nn_dataset_load(&ds, ipath, missing, &err), NN_ENOENT);
  assert_zeroed(&ds);
  assert_non_null(strstr(err.msg, missing));

  memset(&ds, 0xAB, sizeof(ds));
  assert_int_equal(nn_dataset_load(&ds, missing, lpath, &err), NN_ENOENT);
  assert_zeroed(&ds);
  assert_non_null(strstr(err.msg, missing));

  memset(&ds, 0xAB, sizeof(ds));
  assert_int_equal(nn_dataset_load(&ds, missing, lpath, NULL), NN_ENOENT);
  assert_zeroed(&ds);
  free(ifile);
  free(lfile);
}

static void test_bad_arguments(void **state) {
  uint8_t *buf = NULL;
  uint32_t n, rows, cols;
  nn_dataset ds;
  nn_err err;

  (void)state;
  assert_int_equal(nn_idx_read_images(NULL, &buf, &n, &rows, &cols, &err),
                   NN_EINVAL);
  assert_int_equal(err.code, NN_EINVAL);
  assert_int_equal(nn_idx_read_images("x", NULL, &n, &rows, &cols, NULL),
                   NN_EINVAL);
  assert_int_equal(nn_idx_read_labels("x", &buf, NULL, &err), NN_EINVAL);
  assert_int_equal(nn_dataset_load(NULL, "a", "b", &err), NN_EINVAL);
  assert_int_equal(nn_dataset_load(&ds, NULL, "b", &err), NN_EINVAL);
  assert_int_equal(nn_dataset_load_dir(&ds, NULL, NN_SPLIT_TRAIN, &err),
                   NN_EINVAL);
  assert_int_equal(nn_dataset_load_dir(&ds, "", NN_SPLIT_TRAIN, &err),
                   NN_EINVAL);
  assert_int_equal(nn_dataset_load_dir(&ds, g_dir, (nn_split)7, &err),
                   NN_EINVAL);
}

/* ---------------------------------------------------------------- dirs */

static void put_in(const char *dir, const char *name, const void *buf,
                   size_t len, int gzip) {
  char path[PATH_LEN];
  int plen = snprintf(path, sizeof(path), "%s/%s", dir, name);

  assert_true(plen > 0 && plen < PATH_LEN);
  if (gzip)
    write_gz(path, buf, len);
  else
    write_plain(path, buf, len);
}

static void test_load_dir(void **state) {
  char dir[PATH_LEN], slash[PATH_LEN + 1];
  uint8_t *i3, *i5, *l3, *l5;
  size_t i3len, i5len, l3len, l5len;
  nn_dataset ds;
  nn_err err;

  (void)state;
  tpath(dir, "set");
  assert_int_equal(mkdir(dir, 0700), 0);
  i3 = images_build(3, 28, 28, &i3len);
  l3 = labels_build(3, &l3len);
  i5 = images_build(5, 28, 28, &i5len);
  l5 = labels_build(5, &l5len);

  /* Only .gz train files: found. */
  put_in(dir, "train-images-idx3-ubyte.gz", i3, i3len, 1);
  put_in(dir, "train-labels-idx1-ubyte.gz", l3, l3len, 1);
  assert_int_equal(nn_dataset_load_dir(&ds, dir, NN_SPLIT_TRAIN, &err), 0);
  assert_int_equal(ds.n, 3);
  assert_memory_equal(ds.images, i3 + 16, 3 * 784);
  nn_dataset_free(&ds);

  /* Counting reads the label header only: 3 from the .gz train labels;
   * the test split is absent; an image file under a label name is refused. */
  {
    uint32_t cnt = 0;
    assert_int_equal(nn_dataset_count_dir(dir, NN_SPLIT_TRAIN, &cnt, &err), 0);
    assert_int_equal(cnt, 3);
    assert_int_equal(nn_dataset_count_dir(dir, NN_SPLIT_TEST, &cnt, &err), NN_ENOENT);
    char other[PATH_LEN];
    tpath(other, "count-bad");
    assert_int_equal(mkdir(other, 0700), 0);
    put_in(other, "t10k-labels-idx1-ubyte", i5, i5len, 0);
    assert_int_equal(nn_dataset_count_dir(other, NN_SPLIT_TEST, &cnt, &err), NN_EFORMAT);
    put_in(other, "train-labels-idx1-ubyte", l5, 4, 0);
    assert_int_equal(nn_dataset_count_dir(other, NN_SPLIT_TRAIN, &cnt, &err), NN_ETRUNC);
  }

  /* A trailing slash is fine. */
  snprintf(slash, sizeof(slash), "%s/", dir);
  assert_int_equal(nn_dataset_load_dir(&ds, slash, NN_SPLIT_TRAIN, &err), 0);
  assert_int_equal(ds.n, 3);
  nn_dataset_free(&ds);

  /* Test split missing: NN_ENOENT naming the directory and the file. */
  memset(&ds, 0xAB, sizeof(ds));
  assert_int_equal(nn_dataset_load_dir(&ds, dir, NN_SPLIT_TEST, &err),
                   NN_ENOENT);
  assert_int_equal(err.code, NN_ENOENT);
  assert_zeroed(&ds);
  assert_non_null(strstr(err.msg, dir));
  assert_non_null(strstr(err.msg, "t10k-images-idx3-ubyte"));

  /* Images present, labels missing: the message names the label file. */
  put_in(dir, "t10k-images-idx3-ubyte", i5, i5len, 0);
  assert_int_equal(nn_dataset_load_dir(&ds, dir, NN_SPLIT_TEST, &err),
                   NN_ENOENT);
  assert_non_null(strstr(err.msg, "t10k-labels-idx1-ubyte"));

  /* Plain and .gz mixed across the pair. */
  put_in(dir, "t10k-labels-idx1-ubyte.gz", l5, l5len, 1);
  assert_int_equal(nn_dataset_load_dir(&ds, dir, NN_SPLIT_TEST, &err), 0);
  assert_int_equal(ds.n, 5);
  assert_memory_equal(ds.labels, l5 + 8, 5);
  nn_dataset_free(&ds);

  /* Both plain and .gz: the plain file wins. */
  put_in(dir, "train-images-idx3-ubyte", i5, i5len, 0);
  put_in(dir, "train-labels-idx1-ubyte", l5, l5len, 0);
  assert_int_equal(nn_dataset_load_dir(&ds, dir, NN_SPLIT_TRAIN, &err), 0);
  assert_int_equal(ds.n, 5);
  nn_dataset_free(&ds);

  /* Errors inside a found file name that file. */
  put_in(dir, "train-labels-idx1-ubyte", l3, l3len, 0);
  assert_int_equal(nn_dataset_load_dir(&ds, dir, NN_SPLIT_TRAIN, &err),
                   NN_EMISMATCH);
  assert_non_null(strstr(err.msg, "train-labels-idx1-ubyte"));
  assert_zeroed(&ds);

  free(i3);
  free(i5);
  free(l3);
  free(l5);
}

static void test_load_dir_missing_dir(void **state) {
  char dir[PATH_LEN], file[PATH_LEN];
  nn_dataset ds;
  nn_err err;

  (void)state;
  tpath(dir, "no-such-set");
  memset(&ds, 0xAB, sizeof(ds));
  assert_int_equal(nn_dataset_load_dir(&ds, dir, NN_SPLIT_TRAIN, &err),
                   NN_ENOENT);
  assert_zeroed(&ds);
  assert_non_null(strstr(err.msg, dir));

  /* An empty directory. */
  assert_int_equal(mkdir(dir, 0700), 0);
  assert_int_equal(nn_dataset_load_dir(&ds, dir, NN_SPLIT_TRAIN, &err),
                   NN_ENOENT);
  assert_non_null(strstr(err.msg, dir));
  assert_non_null(strstr(err.msg, "train-images-idx3-ubyte"));

  /* A file where the directory should be. */
  put(file, "not-a-dir", "x", 1, 0);
  assert_int_equal(nn_dataset_load_dir(&ds, file, NN_SPLIT_TRAIN, &err),
                   NN_EINVAL);
  assert_non_null(strstr(err.msg, file));
  assert_zeroed(&ds);
}

/* ---------------------------------------------------------------- real */

/* Loads dir (relative to $MNISTD_DATA) and checks the standard shapes,
 * the label histogram and the first training label. Skips when the data
 * are not there. */
static void check_real(const char *sub, const uint32_t hist_train[10],
                       const uint32_t hist_test[10], uint8_t first_train) {
  const char *root = getenv("MNISTD_DATA");
  char dir[PATH_LEN];
  struct stat st;
  int split;

  if (root == NULL || root[0] == '\0')
    skip();
  if (snprintf(dir, sizeof(dir), "%s/%s", root, sub) >= (int)sizeof(dir))
    fail_msg("MNISTD_DATA is too long");
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    skip();

  for (split = 0; split <= 1; split++) {
    const uint32_t *want = split == 0 ? hist_train : hist_test;
    uint32_t hist[10] = {0}, i, sum = 0;
    unsigned max_pixel = 0;
    size_t p;
    nn_dataset ds;
    nn_err err;
    int rc;

    rc = nn_dataset_load_dir(&ds, dir, (nn_split)split, &err);
    if (rc != 0)
      fail_msg("%s: %s", dir, err.msg);
    assert_int_equal(ds.n, split == 0 ? 60000 : 10000);
    assert_int_equal(ds.rows, 28);
    assert_int_equal(ds.cols, 28);
    for (i = 0; i < ds.n; i++) {
      assert_true(ds.labels[i] < NN_CLASSES);
      hist[ds.labels[i]]++;
    }
    for (i = 0; i < NN_CLASSES; i++) {
      assert_int_equal(hist[i], want[i]);
      sum += hist[i];
    }
    assert_int_equal(sum, ds.n);
    for (p = 0; p < (size_t)ds.n * NN_IMAGE_SIZE; p++)
      if (ds.images[p] > max_pixel)
        max_pixel = ds.images[p];
    assert_int_equal(max_pixel, 255);
    if (split == 0)
      assert_int_equal(ds.labels[0], first_train);
    nn_dataset_free(&ds);
  }
}

static void test_real_mnist(void **state) {
  static const uint32_t train[10] = {5923, 6742, 5958, 6131, 5842,
                                     5421, 5918, 6265, 5851, 5949};
  static const uint32_t test[10] = {980, 1135, 1032, 1010, 982,
                                    892, 958,  1028, 974,  1009};
  (void)state;
  check_real("mnist", train, test, 5);
}

static void test_real_fashion_mnist(void **state) {
  static const uint32_t train[10] = {6000, 6000, 6000, 6000, 6000,
                                     6000, 6000, 6000, 6000, 6000};
  static const uint32_t test[10] = {1000, 1000, 1000, 1000, 1000,
                                    1000, 1000, 1000, 1000, 1000};
  (void)state;
  check_real("fashion-mnist", train, test, 9);
}

/* ---------------------------------------------------------------- main */

static int group_setup(void **state) {
  const char *tmp = getenv("TMPDIR");

  (void)state;
  if (tmp == NULL || tmp[0] == '\0')
    tmp = "/tmp";
  snprintf(g_dir, sizeof(g_dir), "%s/test_idx.XXXXXX", tmp);
  return mkdtemp(g_dir) == NULL ? -1 : 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int group_teardown(void **state) {
  (void)state;
  return nftw(g_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}


/* Bytes of address space this process has mapped now (VmSize). */
static size_t vm_size(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  size_t kb = 0;

  assert_non_null(f);
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmSize: %zu kB", &kb) == 1)
      break;
  fclose(f);
  return kb * 1024;
}

/* Issue 9 #22: a few hundred bytes of gzip whose header claims 1,000,000
 * images (784 MB) must not make the reader allocate the claimed size
 * before the data arrives. The child runs with 200 MB of address space to
 * spare: an up-front allocation fails (NN_ENOMEM), a growing buffer
 * reports the truncation. */
static void test_gzip_lying_header_bounded(void **state) {
  char path[PATH_MAX];
  uint8_t hdr[16 + 1000];
  uint32_t dims[3] = {1000000, 28, 28};
  pid_t pid;
  int status;

  (void)state;
  memset(hdr, 7, sizeof hdr);
  hdr[0] = hdr[1] = 0;
  hdr[2] = 0x08;
  hdr[3] = 3;
  for (int i = 0; i < 3; i++)
    put_be32(hdr + 4 + 4 * i, dims[i]);
  put(path, "lying-images.gz", hdr, sizeof hdr, 1);
  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    struct rlimit rl;
    uint8_t *img = NULL;
    uint32_t n = 0, rows = 0, cols = 0;
    nn_err err;
    int rc;

    rl.rlim_cur = rl.rlim_max = vm_size() + ((size_t)200 << 20);
    if (setrlimit(RLIMIT_AS, &rl) != 0)
      _exit(3);
    rc = nn_idx_read_images(path, &img, &n, &rows, &cols, &err);
    if (rc == NN_ETRUNC && strstr(err.msg, "truncated") != NULL)
      _exit(0);
    fprintf(stderr, "rc %d: %s\n", rc, err.msg);
    _exit(rc == NN_ENOMEM ? 1 : 2);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_images_plain),
      cmocka_unit_test(test_images_gzip),
      cmocka_unit_test(test_labels_plain_and_gzip),
      cmocka_unit_test(test_detect_by_content),
      cmocka_unit_test(test_bad_magic),
      cmocka_unit_test(test_bad_type),
      cmocka_unit_test(test_bad_dim_count),
      cmocka_unit_test(test_zero_dims),
      cmocka_unit_test(test_too_big),
      cmocka_unit_test(test_truncated),
      cmocka_unit_test(test_trailing),
      cmocka_unit_test(test_label_out_of_range),
      cmocka_unit_test(test_missing),
      cmocka_unit_test(test_directory_path),
      cmocka_unit_test(test_corrupt_gzip),
      cmocka_unit_test(test_gzip_bad_crc_at_buffer_end),
      cmocka_unit_test(test_cut_gzip),
      cmocka_unit_test(test_dataset_load),
      cmocka_unit_test(test_dataset_count_mismatch),
      cmocka_unit_test(test_dataset_not_28x28),
      cmocka_unit_test(test_dataset_file_errors),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_load_dir),
      cmocka_unit_test(test_load_dir_missing_dir),
      cmocka_unit_test(test_gzip_lying_header_bounded),
      cmocka_unit_test(test_real_mnist),
      cmocka_unit_test(test_real_fashion_mnist),
  };

  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
