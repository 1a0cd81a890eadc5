/*
 * fuzz_dsarchive.c — libFuzzer target for srv_ds_parse_archive, the walker
 * of uploaded zip / tar / tar.gz data sets (class folders of PNG/PGM, or
 * IDX files with classes.txt), on libarchive's memory reader.
 *
 * Invariants: the return is 0 or one of the documented codes with a
 * message; on success the build is consistent (labels index classes,
 * distinct names, limits kept) with both preprocessing modes.
 */
#include <archive.h>
#include <errno.h>
#include <string.h>

#include "fuzz_common.h"
#include "srv_dsparse.h"

static void fuzz_dsarchive_check(const srv_ds_build *b, const srv_ds_limits *lim) {
  FUZZ_CHECK(b->n_classes <= lim->max_classes, "%u classes", b->n_classes);
  FUZZ_CHECK(b->train.n + b->test.n <= lim->max_images, "too many images");
  for (uint32_t i = 0; i < b->n_classes; i++)
    for (uint32_t j = 0; j < i; j++)
      FUZZ_CHECK(strcmp(b->classes[i], b->classes[j]), "class %s twice", b->classes[i]);
  for (uint64_t i = 0; i < b->train.n; i++)
    FUZZ_CHECK(b->train.labels[i] < b->n_classes, "train label out of range");
  for (uint64_t i = 0; i < b->test.n; i++)
    FUZZ_CHECK(b->test.labels[i] < b->n_classes, "test label out of range");
}

int fuzz_dsarchive(const uint8_t *data, size_t size) {
  srv_ds_limits lim;
  srv_ds_limits_default(&lim);
  lim.max_images = 256;
  lim.max_classes = 16;
  lim.max_archive_bytes = 8u << 20; /* a bomb stops here, not in the allocator */
  lim.max_entries = 512;
  lim.max_image_bytes = 1u << 20;
  for (int pre = 0; pre < 2; pre++) {
    struct archive *a = archive_read_new();
    if (!a) return 0;
    archive_read_support_filter_gzip(a);
    archive_read_support_format_zip(a);
    archive_read_support_format_tar(a);
    srv_ds_build b = {0};
    char msg[400] = "";
    int rc = -EINVAL;
    if (archive_read_open_memory(a, data, size) == ARCHIVE_OK)
      rc = srv_ds_parse_archive(a, &lim, pre, &b, msg, sizeof msg);
    archive_read_free(a);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -E2BIG || rc == -ENOMEM, "rc %d", rc);
    if (rc == 0) fuzz_dsarchive_check(&b, &lim);
    srv_ds_build_free(&b);
  }
  return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_dsarchive(data, size); }
#endif
