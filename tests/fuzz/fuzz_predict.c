/*
 * fuzz_predict.c — libFuzzer target for the JSON predict bodies:
 * srv_predict_json_parse ({"image": [...]} / {"images": [[...], ...]}) and
 * srv_tfs_parse ({"instances": [...]}), each on every input.
 *
 * Invariants: the code is 0, -EINVAL, -E2BIG or -ENOMEM; on failure the
 * outputs are NULL/0 and (except -ENOMEM) msg is set; on success 1..1024
 * images, the buffer is n images long (ASan checks the last byte) and TF
 * Serving values are in [0, 1].
 */
#include "fuzz_common.h"

#include "srv_validate.h"

int fuzz_predict(const uint8_t *data, size_t size) {
  const char *body = (const char *)data;
  char msg[256] = "";
  uint8_t *px = (uint8_t *)1;
  uint32_t n = 77;
  int rc = srv_predict_json_parse(body, size, &px, &n, msg, sizeof msg);
  FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -E2BIG || rc == -ENOMEM, "rc = %d", rc);
  if (rc == 0) {
    FUZZ_CHECK(px != NULL && n >= 1 && n <= SRV_MAX_PREDICT_IMAGES, "n = %u", n);
    volatile uint8_t sink = (uint8_t)(px[0] ^ px[(size_t)n * NN_IMAGE_SIZE - 1]);
    (void)sink;
    free(px);
  } else {
    FUZZ_CHECK(px == NULL && n == 0, "outputs not reset on failure (rc %d)", rc);
    if (rc != -ENOMEM) FUZZ_CHECK(msg[0] != '\0', "failure %d without a message", rc);
  }

  float *x = (float *)1;
  n = 77;
  msg[0] = '\0';
  rc = srv_tfs_parse(body, size, &x, &n, msg, sizeof msg);
  FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -E2BIG || rc == -ENOMEM, "rc = %d", rc);
  if (rc == 0) {
    FUZZ_CHECK(x != NULL && n >= 1 && n <= SRV_MAX_PREDICT_IMAGES, "n = %u", n);
    for (size_t i = 0; i < (size_t)n * NN_IMAGE_SIZE; i++)
      FUZZ_CHECK(x[i] >= 0.0f && x[i] <= 1.0f, "x[%zu] = %g", i, (double)x[i]);
    free(x);
  } else {
    FUZZ_CHECK(x == NULL && n == 0, "outputs not reset on failure (rc %d)", rc);
    if (rc != -ENOMEM) FUZZ_CHECK(msg[0] != '\0', "failure %d without a message", rc);
  }
  return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_predict(data, size); }
#endif
