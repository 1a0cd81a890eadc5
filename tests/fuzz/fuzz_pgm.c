/*
 * fuzz_pgm.c — libFuzzer target for srv_image_decode_pgm (P5 and P2, 8- and
 * 16-bit, comments) followed by srv_image_to_mnist on whatever decodes. A
 * small P5 file is effectively a raw grayscale image, so this target is also
 * the main fuzzer of the MNIST preprocessing (crop, area-average scaling,
 * centring).
 *
 * Invariants (fuzz_image_common.h): on failure *out is {0,0,NULL}, the code
 * is one of the documented ones and msg is set; on success msg is "", the
 * size is within limits and the buffer is w*h bytes; to_mnist accepts every
 * decoded image.
 */
#include "fuzz_image_common.h"

int fuzz_pgm(const uint8_t *data, size_t size) {
  srv_gray g = {1, 1, (uint8_t *)1};
  char msg[256] = "unset";
  int rc = srv_image_decode_pgm(data, size, &g, msg, sizeof msg);
  fuzz_image_check_decoded("srv_image_decode_pgm", rc, &g, msg);
  if (rc == 0) {
    fuzz_image_check_mnist(&g);
    srv_gray_free(&g);
  }
  /* Messages are truncated, never overflowed, in a tiny buffer. */
  char tiny[4];
  rc = srv_image_decode_pgm(data, size, &g, tiny, sizeof tiny);
  FUZZ_CHECK(memchr(tiny, '\0', sizeof tiny) != NULL, "message not terminated");
  srv_gray_free(&g);
  return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_pgm(data, size); }
#endif
