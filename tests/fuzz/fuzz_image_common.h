/*
 * fuzz_image_common.h — checks shared by the image harnesses (fuzz_png.c,
 * fuzz_pgm.c, fuzz_image.c): what a decoder must leave behind on success
 * and on failure, and srv_image_to_mnist on every decoded image.
 */
#ifndef MNISTD_FUZZ_IMAGE_COMMON_H
#define MNISTD_FUZZ_IMAGE_COMMON_H

#include "fuzz_common.h"

#include "srv_image.h"

static inline int fuzz_image_known_rc(int rc) {
  return rc == 0 || rc == -EINVAL || rc == -E2BIG || rc == -ENOTSUP || rc == -ENOMEM;
}

/* After srv_image_decode_png/pgm returned rc into g and msg. */
static inline void fuzz_image_check_decoded(const char *who, int rc, const srv_gray *g,
                                            const char *msg) {
  FUZZ_CHECK(fuzz_image_known_rc(rc) && rc != -ENOTSUP, "%s returned %d", who, rc);
  if (rc != 0) {
    FUZZ_CHECK(g->w == 0 && g->h == 0 && g->px == NULL, "%s: *out not reset on failure", who);
    FUZZ_CHECK(msg[0] != '\0', "%s: failure %d without a message", who, rc);
    return;
  }
  FUZZ_CHECK(msg[0] == '\0', "%s: success with message \"%s\"", who, msg);
  FUZZ_CHECK(g->px != NULL && g->w >= 1 && g->h >= 1 && g->w <= SRV_IMAGE_MAX_SIDE &&
                 g->h <= SRV_IMAGE_MAX_SIDE,
             "%s: bad image %ux%u", who, g->w, g->h);
  /* Touch both ends: ASan proves the pixel buffer is w*h bytes. */
  size_t npx = (size_t)g->w * g->h;
  volatile uint8_t sink = (uint8_t)(g->px[0] ^ g->px[npx - 1]);
  (void)sink;
}

/* Runs the MNIST preprocessing on a decoded image and checks its contract. */
static inline void fuzz_image_check_mnist(const srv_gray *g) {
  uint8_t out[SRV_IMAGE_SIZE];
  int empty = 7;
  int rc = srv_image_to_mnist(g, out, &empty);
  FUZZ_CHECK(rc == 0, "srv_image_to_mnist failed (%d) on a decoded %ux%u image", rc, g->w, g->h);
  FUZZ_CHECK(empty == 0 || empty == 1, "empty = %d", empty);
  if (!empty) {
    int any = 0;
    for (size_t i = 0; i < SRV_IMAGE_SIZE; i++) any |= out[i] != 0;
    FUZZ_CHECK(any, "not empty but all zero");
  }
}

#endif
