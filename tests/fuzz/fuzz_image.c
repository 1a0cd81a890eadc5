/*
 * fuzz_image.c — libFuzzer target for the one-call path used by
 * POST /v1/predict: srv_image_sniff + srv_image_from_bytes (PNG, PGM, raw or
 * refusal), and srv_image_raw_count.
 *
 * Input layout: the first byte picks the Content-Type header from a table
 * (NULL, the ones the sniffer knows, odd spellings and foreign types); the
 * rest is the request body.
 *
 * Invariants: the code is one of the documented ones; on success msg is ""
 * and empty is 0/1, and a RAW body is copied unchanged; on failure out[] and
 * *empty are untouched and msg is set; an empty body is -EINVAL; the sniffer
 * never answers outside its enum.
 */
#include "fuzz_image_common.h"

static const char *const image_fuzz_ctypes[] = {
    NULL,
    "application/octet-stream",
    "image/png",
    "image/x-portable-graymap",
    "image/x-portable-anymap",
    "image/x-pgm",
    "IMAGE/PNG; charset=binary",
    "  Application/Octet-Stream\t;q=1",
    "application/x-www-form-urlencoded",
    "image/jpeg",
    "text/plain",
    "",
    "image/pngx",
    "application/octet-streamy",
    "image/x-pgm;",
    "image/x-portable-graymap ",
};
#define IMAGE_FUZZ_NCT (sizeof image_fuzz_ctypes / sizeof *image_fuzz_ctypes)

int fuzz_image(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const char *ct = image_fuzz_ctypes[data[0] % IMAGE_FUZZ_NCT];
  const uint8_t *body = data + 1;
  size_t len = size - 1;

  srv_image_format f = srv_image_sniff(ct, body, len);
  FUZZ_CHECK(f == SRV_IMAGE_UNKNOWN || f == SRV_IMAGE_PNG || f == SRV_IMAGE_PGM ||
                 f == SRV_IMAGE_RAW,
             "sniff returned %d", (int)f);

  uint8_t out[SRV_IMAGE_SIZE];
  memset(out, 0xA5, sizeof out);
  int empty = 7;
  char msg[256] = "unset";
  int rc = srv_image_from_bytes(ct, len ? body : NULL, len, out, &empty, msg, sizeof msg);
  FUZZ_CHECK(fuzz_image_known_rc(rc), "srv_image_from_bytes returned %d", rc);
  if (len == 0) FUZZ_CHECK(rc == -EINVAL, "empty body gave %d", rc);
  if (rc == 0) {
    FUZZ_CHECK(msg[0] == '\0', "success with message \"%s\"", msg);
    FUZZ_CHECK(empty == 0 || empty == 1, "empty = %d", empty);
    FUZZ_CHECK(f != SRV_IMAGE_UNKNOWN, "decoded a body the sniffer did not recognise");
    if (f == SRV_IMAGE_RAW)
      FUZZ_CHECK(len == SRV_IMAGE_SIZE && memcmp(out, body, SRV_IMAGE_SIZE) == 0,
                 "raw body not copied unchanged");
  } else {
    FUZZ_CHECK(msg[0] != '\0', "failure %d without a message", rc);
    FUZZ_CHECK(empty == 7, "*empty written on failure");
    for (size_t i = 0; i < sizeof out; i++)
      FUZZ_CHECK(out[i] == 0xA5, "out[%zu] written on failure", i);
    if (f == SRV_IMAGE_UNKNOWN && len > 0) FUZZ_CHECK(rc == -ENOTSUP, "unknown format gave %d", rc);
  }

  size_t n = 99;
  rc = srv_image_raw_count(len, &n, NULL, 0);
  if (len > 0 && len % SRV_IMAGE_SIZE == 0)
    FUZZ_CHECK(rc == 0 && n == len / SRV_IMAGE_SIZE, "raw_count(%zu) = %d, n %zu", len, rc, n);
  else
    FUZZ_CHECK(rc == -EINVAL && n == 0, "raw_count(%zu) = %d, n %zu", len, rc, n);
  return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_image(data, size); }
#endif
