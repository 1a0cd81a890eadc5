/*
 * fuzz_png.c — libFuzzer target for srv_image_decode_png (libspng underneath)
 * followed by srv_image_to_mnist on whatever decodes.
 *
 * PNG chunks carry CRCs that random mutation breaks, and the decoder
 * rightly refuses them. So when the input looks like a PNG, the harness also
 * decodes a copy with every complete chunk's CRC recomputed, which lets
 * mutated headers, palettes, tRNS chunks and sizes reach the pixel code.
 *
 * Invariants (fuzz_image_common.h): on failure *out is {0,0,NULL}, the code
 * is one of the documented ones and msg is set; on success msg is "", the
 * size is within limits and the buffer is w*h bytes; to_mnist accepts every
 * decoded image.
 */
#include "fuzz_image_common.h"

#include <zlib.h>

static void png_fuzz_decode(const uint8_t *data, size_t size) {
  srv_gray g = {1, 1, (uint8_t *)1};
  char msg[256] = "unset";
  int rc = srv_image_decode_png(data, size, &g, msg, sizeof msg);
  fuzz_image_check_decoded("srv_image_decode_png", rc, &g, msg);
  if (rc == 0) {
    fuzz_image_check_mnist(&g);
    srv_gray_free(&g);
    FUZZ_CHECK(g.px == NULL && g.w == 0 && g.h == 0, "srv_gray_free did not reset");
  }
}

static uint32_t png_fuzz_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Rewrites the CRC of every complete chunk in buf; returns whether any
 * changed. */
static int png_fuzz_fix_crcs(uint8_t *buf, size_t size) {
  int changed = 0;
  size_t off = 8;
  while (size - off >= 12) {
    uint32_t len = png_fuzz_be32(buf + off);
    if (len > size - off - 12) break;
    uint32_t crc = (uint32_t)crc32(0L, buf + off + 4, (uInt)len + 4);
    uint8_t *p = buf + off + 8 + len;
    if (png_fuzz_be32(p) != crc) {
      p[0] = (uint8_t)(crc >> 24);
      p[1] = (uint8_t)(crc >> 16);
      p[2] = (uint8_t)(crc >> 8);
      p[3] = (uint8_t)crc;
      changed = 1;
    }
    off += (size_t)len + 12;
  }
  return changed;
}

int fuzz_png(const uint8_t *data, size_t size) {
  png_fuzz_decode(data, size);
  if (size < 8 + 12 || data[0] != 0x89 || data[1] != 'P') return 0;
  uint8_t *copy = malloc(size);
  if (copy == NULL) return 0;
  memcpy(copy, data, size);
  if (png_fuzz_fix_crcs(copy, size)) png_fuzz_decode(copy, size);
  free(copy);
  return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_png(data, size); }
#endif
