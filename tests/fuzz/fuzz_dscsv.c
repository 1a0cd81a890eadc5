/*
 * fuzz_dscsv.c — libFuzzer target for srv_ds_parse_csv (uploaded Kaggle-style
 * CSV data sets), read through fmemopen as the daemon reads its temp file.
 *
 * Invariants: the return is 0 or one of the documented codes (-EINVAL,
 * -E2BIG, -ENOMEM) with a message; on success every label indexes a class,
 * the classes are distinct, 1..SRV_DS_MAX_CLASS_NAME bytes each, and the
 * image count stays within the limits; the build frees cleanly either way.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_common.h"
#include "srv_dsparse.h"

static void fuzz_dscsv_check_build(const char *who, const srv_ds_build *b,
                                   const srv_ds_limits *lim) {
  FUZZ_CHECK(b->n_classes <= lim->max_classes, "%s: %u classes", who, b->n_classes);
  FUZZ_CHECK(b->train.n + b->test.n <= lim->max_images, "%s: too many images", who);
  for (uint32_t i = 0; i < b->n_classes; i++) {
    size_t l = strlen(b->classes[i]);
    FUZZ_CHECK(l >= 1 && l <= SRV_DS_MAX_CLASS_NAME, "%s: class name of %zu bytes", who, l);
    for (uint32_t j = 0; j < i; j++)
      FUZZ_CHECK(strcmp(b->classes[i], b->classes[j]), "%s: class %s twice", who, b->classes[i]);
  }
  for (uint64_t i = 0; i < b->train.n; i++)
    FUZZ_CHECK(b->train.labels[i] < b->n_classes, "%s: train label out of range", who);
  for (uint64_t i = 0; i < b->test.n; i++)
    FUZZ_CHECK(b->test.labels[i] < b->n_classes, "%s: test label out of range", who);
}

int fuzz_dscsv(const uint8_t *data, size_t size) {
  srv_ds_limits lim;
  srv_ds_limits_default(&lim);
  lim.max_images = 64; /* keeps each run small; the limit path is exercised */
  lim.max_classes = 16;
  FILE *f = size ? fmemopen((void *)data, size, "rb") : fopen("/dev/null", "rb");
  if (!f) return 0;
  srv_ds_build b = {0};
  char msg[300] = "";
  int rc = srv_ds_parse_csv(f, &lim, &b, msg, sizeof msg);
  fclose(f);
  FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -E2BIG || rc == -ENOMEM, "rc %d", rc);
  FUZZ_CHECK(rc == 0 || msg[0] || rc == -ENOMEM, "rc %d without a message", rc);
  if (rc == 0) {
    fuzz_dscsv_check_build("csv", &b, &lim);
    if (b.train.n > 1 && srv_ds_hold_out(&b, 0.5, 1) == 0) fuzz_dscsv_check_build("hold_out", &b, &lim);
    srv_ds_check(&b, &lim, msg, sizeof msg);
  }
  srv_ds_build_free(&b);
  return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_dscsv(data, size); }
#endif
