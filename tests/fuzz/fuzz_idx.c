/*
 * fuzz_idx.c — libFuzzer target for the IDX readers (core/idx.c):
 * nn_idx_read_images or nn_idx_read_labels (by the dimension byte) on the
 * input bytes as a file, then on a gzip copy of them (stored blocks) (the readers detect gzip by
 * content, so the raw pass also covers mutated .gz seeds).
 *
 * Invariants checked besides "no crash / no sanitizer report":
 *   - success: non-empty buffer and dimensions within the documented limits,
 *     every label < NN_CLASSES, and for a plain (non-gzip) file the file
 *     size is exactly header + payload;
 *   - failure: a negative code, outputs reset to empty, err filled with the
 *     same code and a non-empty message.
 */
#include "fuzz_common.h"

#include <zlib.h>

#include "nn.h"

static int idx_fuzz_is_gzip(const uint8_t *d, size_t n) {
  return n >= 2 && d[0] == 0x1f && d[1] == 0x8b;
}

static void idx_fuzz_images(const char *path, size_t size, int plain) {
  uint8_t *img = (uint8_t *)1;
  uint32_t n = 7, rows = 7, cols = 7;
  nn_err err;
  memset(&err, 0, sizeof err);
  int rc = nn_idx_read_images(path, &img, &n, &rows, &cols, &err);
  if (rc == 0) {
    FUZZ_CHECK(img != NULL && n > 0 && rows > 0 && cols > 0, "%u x %u x %u", n, rows, cols);
    FUZZ_CHECK(n <= NN_IDX_MAX_ITEMS, "n = %u", n);
    uint64_t total = (uint64_t)n * rows * cols;
    FUZZ_CHECK(total <= NN_IDX_MAX_BYTES, "payload %llu", (unsigned long long)total);
    if (plain)
      FUZZ_CHECK(size == 16 + total, "plain file of %zu bytes, payload %llu", size,
                 (unsigned long long)total);
    /* Touch both ends so ASan checks the buffer really is that long. */
    volatile uint8_t sink = (uint8_t)(img[0] ^ img[total - 1]);
    (void)sink;
    free(img);
  } else {
    FUZZ_CHECK(rc < 0, "rc = %d", rc);
    FUZZ_CHECK(img == NULL && n == 0 && rows == 0 && cols == 0,
               "outputs not reset on failure (rc %d)", rc);
    FUZZ_CHECK(err.code == rc && err.msg[0] != '\0', "err not filled: code %d, rc %d",
               err.code, rc);
    FUZZ_CHECK(memchr(err.msg, '\0', sizeof err.msg) != NULL, "unterminated message");
  }
}

static void idx_fuzz_labels(const char *path, size_t size, int plain) {
  uint8_t *lab = (uint8_t *)1;
  uint32_t n = 7;
  nn_err err;
  memset(&err, 0, sizeof err);
  int rc = nn_idx_read_labels(path, &lab, &n, &err);
  if (rc == 0) {
    FUZZ_CHECK(lab != NULL && n > 0 && n <= NN_IDX_MAX_ITEMS, "n = %u", n);
    if (plain) FUZZ_CHECK(size == 8 + (size_t)n, "plain file of %zu bytes, %u labels", size, n);
    for (uint32_t i = 0; i < n; i++)
      FUZZ_CHECK(lab[i] < NN_CLASSES, "label[%u] = %u accepted", i, lab[i]);
    free(lab);
  } else {
    FUZZ_CHECK(rc < 0, "rc = %d", rc);
    FUZZ_CHECK(lab == NULL && n == 0, "outputs not reset on failure (rc %d)", rc);
    FUZZ_CHECK(err.code == rc && err.msg[0] != '\0', "err not filled: code %d, rc %d",
               err.code, rc);
  }
}

/* Every read costs zlib's 768 KiB of gz buffers (IDX_GZ_BUFFER), which
 * ASan maps and unmaps each time; so each file goes to one reader, the one
 * its dimension byte asks for (mutating that byte reaches the other and the
 * "is this a label file?" paths). */
static void idx_fuzz_file(const uint8_t *data, size_t size, int labels) {
  const char *path = fuzz_file_set(data, size);
  if (path == NULL) return;
  int plain = !idx_fuzz_is_gzip(data, size);
  if (labels)
    idx_fuzz_labels(path, size, plain);
  else
    idx_fuzz_images(path, size, plain);
}

/* The input as a gzip member made of stored (uncompressed) deflate blocks:
 * built by hand, it costs a copy and a CRC, where deflate would cost
 * hundreds of KiB of state per call. Inflating real compressed blocks is
 * zlib's business; the mutated .gz seeds cover it in the raw pass. */
static uint8_t *idx_fuzz_gzip(const uint8_t *data, size_t size, size_t *out_len) {
  size_t blocks = size / 65535 + 1;
  uint8_t *out = malloc(10 + size + 5 * blocks + 8);
  if (out == NULL) return NULL;
  static const uint8_t hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
  memcpy(out, hdr, sizeof hdr);
  size_t o = sizeof hdr, off = 0;
  do {
    size_t n = size - off > 65535 ? 65535 : size - off;
    out[o++] = off + n == size ? 1 : 0; /* BFINAL, BTYPE = stored */
    out[o++] = (uint8_t)n;
    out[o++] = (uint8_t)(n >> 8);
    out[o++] = (uint8_t)~n;
    out[o++] = (uint8_t)(~n >> 8);
    if (n) memcpy(out + o, data + off, n);
    o += n;
    off += n;
  } while (off < size);
  uint32_t crc = (uint32_t)crc32(0L, data, (uInt)size);
  for (int i = 0; i < 4; i++) out[o++] = (uint8_t)(crc >> (8 * i));
  for (int i = 0; i < 4; i++) out[o++] = (uint8_t)((uint32_t)size >> (8 * i));
  *out_len = o;
  return out;
}

int fuzz_idx(const uint8_t *data, size_t size) {
  /* Far beyond any useful test case; keeps the gzip copy cheap. */
  if (size > (4u << 20)) return 0;
  int labels = size >= 4 && data[3] == 1;
  idx_fuzz_file(data, size, labels);
  /* The same bytes gzipped, when they could be an IDX file at all (with a
   * wrong magic both passes stop at the same check). */
  if (size >= 3 && data[0] == 0 && data[1] == 0 && data[2] == 8) {
    size_t gz_len = 0;
    uint8_t *gz = idx_fuzz_gzip(data, size, &gz_len);
    if (gz != NULL) {
      idx_fuzz_file(gz, gz_len, labels);
      free(gz);
    }
  }
  return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_idx(data, size); }
#endif
