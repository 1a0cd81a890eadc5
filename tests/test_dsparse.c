/* Unit tests of the uploaded data set parsers (server/srv_dsparse.c): the
 * CSV reader and the archive walker on archives built here with
 * libarchive's writer, around real MNIST digits (MNISTD_DATA). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "nn.h"
#include "srv_dsparse.h"

static nn_dataset mnist;

static int setup(void **state) {
  (void)state;
  const char *d = getenv("MNISTD_DATA");
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/mnist", d ? d : "data");
  nn_err err = {0};
  return nn_dataset_load_dir(&mnist, dir, NN_SPLIT_TEST, &err);
}

static int teardown(void **state) {
  (void)state;
  nn_dataset_free(&mnist);
  return 0;
}

/* A CSV of the first n test digits, label column as given by names (NULL:
 * the digit). */
static char *csv(uint32_t n, const char *const *names, int drop_last_pixel_of_row) {
  size_t cap = 64 + (size_t)n * 784 * 4 + 8000, len = 0;
  char *s = malloc(cap);
  len += (size_t)sprintf(s, "label");
  for (int i = 0; i < 784; i++) len += (size_t)sprintf(s + len, ",pixel%d", i);
  s[len++] = '\n';
  for (uint32_t r = 0; r < n; r++) {
    uint8_t l = mnist.labels[r];
    len += names ? (size_t)sprintf(s + len, "%s", names[l]) : (size_t)sprintf(s + len, "%u", l);
    int px = (int)r == drop_last_pixel_of_row ? 783 : 784;
    for (int i = 0; i < px; i++) len += (size_t)sprintf(s + len, ",%u", mnist.images[r * 784 + i]);
    s[len++] = '\r';
    s[len++] = '\n';
  }
  s[len] = 0;
  return s;
}

static int parse_csv_text(const char *text, srv_ds_build *b, char *msg, size_t len) {
  srv_ds_limits lim;
  srv_ds_limits_default(&lim);
  FILE *f = fmemopen((void *)text, strlen(text), "rb");
  int rc = srv_ds_parse_csv(f, &lim, b, msg, len);
  fclose(f);
  return rc;
}

static void test_csv_digits(void **state) {
  (void)state;
  char *s = csv(300, NULL, -1), msg[300];
  srv_ds_build b = {0};
  assert_int_equal(parse_csv_text(s, &b, msg, sizeof msg), 0);
  assert_int_equal(b.n_classes, 10);
  assert_string_equal(b.classes[0], "0");
  assert_string_equal(b.classes[9], "9");
  assert_int_equal(b.train.n, 300);
  for (uint32_t i = 0; i < 300; i++) assert_int_equal(b.train.labels[i], mnist.labels[i]);
  assert_memory_equal(b.train.images, mnist.images, 300 * 784);
  /* seeded hold-out: 1/6 of each class, the same twice */
  assert_int_equal(srv_ds_hold_out(&b, 1.0 / 6, 7), 0);
  assert_int_equal(b.train.n + b.test.n, 300);
  assert_in_range(b.test.n, 40, 60);
  srv_ds_limits lim;
  srv_ds_limits_default(&lim);
  assert_int_equal(srv_ds_check(&b, &lim, msg, sizeof msg), 0);
  srv_ds_build_free(&b);
  free(s);
}

static void test_csv_names_and_refusals(void **state) {
  (void)state;
  static const char *const NAMES[10] = {"zero", "one", "two", "three", "four",
                                        "five", "six", "seven", "eight", "nine"};
  char *s = csv(50, NAMES, -1), msg[300];
  srv_ds_build b = {0};
  assert_int_equal(parse_csv_text(s, &b, msg, sizeof msg), 0);
  for (uint32_t c = 1; c < b.n_classes; c++) /* names sort as text */
    assert_true(strcmp(b.classes[c - 1], b.classes[c]) < 0);
  for (uint32_t i = 0; i < 50; i++)
    assert_string_equal(b.classes[b.train.labels[i]], NAMES[mnist.labels[i]]);
  srv_ds_build_free(&b);
  free(s);
  s = csv(5, NULL, 3);
  assert_int_equal(parse_csv_text(s, &b, msg, sizeof msg), -EINVAL);
  if (!strstr(msg, "line 5: 783 pixel values")) fail_msg("message: %s", msg);
  srv_ds_build_free(&b);
  free(s);
  assert_int_equal(parse_csv_text("pixel0,pixel1\n", &b, msg, sizeof msg), -EINVAL);
  assert_non_null(strstr(msg, "\"label\""));
  srv_ds_build_free(&b);
}

/* Writes entries (name, data or NULL for a directory, symlink target) into
 * a tar (gz when gz) in memory. */
typedef struct ent {
  const char *name;
  const void *data;
  size_t len;
  const char *symlink;
} ent;

static size_t make_tar(const ent *e, size_t n, int gz, uint8_t *buf, size_t cap) {
  struct archive *a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (gz) archive_write_add_filter_gzip(a);
  size_t used = 0;
  assert_int_equal(archive_write_open_memory(a, buf, cap, &used), ARCHIVE_OK);
  for (size_t i = 0; i < n; i++) {
    struct archive_entry *x = archive_entry_new();
    archive_entry_set_pathname(x, e[i].name);
    if (e[i].symlink) {
      archive_entry_set_filetype(x, AE_IFLNK);
      archive_entry_set_symlink(x, e[i].symlink);
    } else if (!e[i].data) {
      archive_entry_set_filetype(x, AE_IFDIR);
    } else {
      archive_entry_set_filetype(x, AE_IFREG);
      archive_entry_set_size(x, (la_int64_t)e[i].len);
    }
    archive_entry_set_perm(x, 0644);
    archive_write_header(a, x);
    if (e[i].data) archive_write_data(a, e[i].data, e[i].len);
    archive_entry_free(x);
  }
  archive_write_close(a);
  archive_write_free(a);
  return used;
}

static int walk(const uint8_t *buf, size_t len, srv_ds_build *b, char *msg, size_t msglen) {
  srv_ds_limits lim;
  srv_ds_limits_default(&lim);
  struct archive *a = archive_read_new();
  archive_read_support_filter_gzip(a);
  archive_read_support_format_tar(a);
  archive_read_support_format_zip(a);
  int rc = archive_read_open_memory(a, buf, len) == ARCHIVE_OK
               ? srv_ds_parse_archive(a, &lim, 1, b, msg, msglen) : -EINVAL;
  archive_read_free(a);
  return rc;
}

/* A PGM of test digit i (P5, 28x28: MNIST-ready, taken as it is). */
static size_t pgm(uint32_t i, uint8_t *out) {
  int h = sprintf((char *)out, "P5\n28 28\n255\n");
  memcpy(out + h, mnist.images + (size_t)i * 784, 784);
  return (size_t)h + 784;
}

static void test_archive_folders(void **state) {
  (void)state;
  static uint8_t img[6][900], buf[1 << 20];
  ent e[6];
  const char *names[6] = {"set/train/b/0.pgm", "set/train/a/1.pgm", "set/train/b/2.pgm",
                          "set/test/a/3.pgm",  "set/train/a/4.pgm", "set/test/b/5.pgm"};
  for (int i = 0; i < 6; i++) {
    e[i] = (ent){names[i], img[i], pgm((uint32_t)i, img[i]), NULL};
  }
  size_t n = make_tar(e, 6, 1, buf, sizeof buf);
  srv_ds_build b = {0};
  char msg[400];
  assert_int_equal(walk(buf, n, &b, msg, sizeof msg), 0);
  assert_int_equal(b.n_classes, 2);
  assert_string_equal(b.classes[0], "a");
  assert_int_equal(b.train.n, 4);
  assert_int_equal(b.test.n, 2);
  assert_true(b.has_test);
  assert_string_equal(b.source_format, "png-folders");
  assert_int_equal(b.train.labels[0], 1); /* train/b first */
  assert_memory_equal(b.train.images, mnist.images, 784);
  srv_ds_build_free(&b);

  /* refusals name the entry */
  struct {
    ent extra;
    const char *want;
  } bad[] = {
      {{"set/train/a/../../x.pgm", img[0], e[0].len, NULL}, "\"..\""},
      {{"set/train/a/l.pgm", NULL, 0, "/etc/passwd"}, "set/train/a/l.pgm: symbolic links"},
      {{"set/train/A/9.pgm", img[0], e[0].len, NULL}, "only in case"},
      {{"set/train/c/", NULL, 0, NULL}, "train/c: empty class"},
      {{"set/train/a/j.png", "\xff\xd8\xff", 3, NULL}, "set/train/a/j.png: not a PNG or PGM"},
      {{"set/readme.md", "hi", 2, NULL}, "set/readme.md: unexpected entry"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    ent all[7];
    memcpy(all, e, sizeof e);
    all[6] = bad[k].extra;
    n = make_tar(all, 7, 0, buf, sizeof buf);
    memset(msg, 0, sizeof msg);
    int rc = walk(buf, n, &b, msg, sizeof msg);
    if (rc != -EINVAL || !strstr(msg, bad[k].want))
      fail_msg("case %zu: rc %d msg '%s', wanted '%s'", k, rc, msg, bad[k].want);
    srv_ds_build_free(&b);
  }
  /* cut short */
  n = make_tar(e, 6, 1, buf, sizeof buf);
  assert_int_equal(walk(buf, n / 2, &b, msg, sizeof msg), -EINVAL);
  srv_ds_build_free(&b);
}

static void test_archive_idx(void **state) {
  (void)state;
  static uint8_t im[16 + 20 * 784], lb[8 + 20], buf[1 << 20];
  const uint8_t hi[16] = {0, 0, 8, 3, 0, 0, 0, 20, 0, 0, 0, 28, 0, 0, 0, 28};
  const uint8_t hl[8] = {0, 0, 8, 1, 0, 0, 0, 20};
  memcpy(im, hi, 16);
  memcpy(im + 16, mnist.images, 20 * 784);
  memcpy(lb, hl, 8);
  memcpy(lb + 8, mnist.labels, 20);
  ent e[3] = {{"train-images-idx3-ubyte", im, sizeof im, NULL},
              {"train-labels-idx1-ubyte", lb, sizeof lb, NULL},
              {"classes.txt", "z\no\nt\nth\nf\nfi\ns\nse\ne\nn\n", 23, NULL}};
  size_t n = make_tar(e, 3, 0, buf, sizeof buf);
  srv_ds_build b = {0};
  char msg[400] = "";
  if (walk(buf, n, &b, msg, sizeof msg)) fail_msg("%s", msg);
  assert_int_equal(b.n_classes, 10);
  assert_string_equal(b.classes[1], "o"); /* classes.txt order is the label order */
  assert_int_equal(b.train.n, 20);
  assert_false(b.has_test);
  assert_memory_equal(b.train.labels, mnist.labels, 20);
  srv_ds_build_free(&b);
  e[2] = (ent){"classes.txt", "a\nb\n", 4, NULL}; /* labels up to 9 */
  n = make_tar(e, 3, 0, buf, sizeof buf);
  assert_int_equal(walk(buf, n, &b, msg, sizeof msg), -EINVAL);
  assert_non_null(strstr(msg, "out of range"));
  srv_ds_build_free(&b);
}

/* gzip of n bytes into out (cap); returns the length. */
static size_t gz(const void *in, size_t n, uint8_t *out, size_t cap) {
  z_stream z = {0};
  assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)n;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
  size_t len = z.total_out;
  deflateEnd(&z);
  return len;
}

static int walk_budget(const uint8_t *buf, size_t len, uint64_t budget, srv_ds_build *b,
                       char *msg, size_t msglen) {
  srv_ds_limits lim;
  srv_ds_limits_default(&lim);
  lim.max_archive_bytes = budget;
  struct archive *a = archive_read_new();
  archive_read_support_format_tar(a);
  int rc = archive_read_open_memory(a, buf, len) == ARCHIVE_OK
               ? srv_ds_parse_archive(a, &lim, 1, b, msg, msglen) : -EINVAL;
  archive_read_free(a);
  return rc;
}

/* Known defect K5c: a gzipped IDX inside an archive was inflated outside
 * the archive's byte budget (only its compressed bytes counted, and the
 * first 1 MiB of output was never checked). */
static void test_archive_gz_idx_budget(void **state) {
  (void)state;
  enum { N = 200 };
  static uint8_t im[16 + N * 784], lb[8 + N], zim[sizeof im + 1024], zlb[sizeof lb + 1024],
      buf[1 << 20];
  const uint8_t hi[16] = {0, 0, 8, 3, 0, 0, 0, N, 0, 0, 0, 28, 0, 0, 0, 28};
  const uint8_t hl[8] = {0, 0, 8, 1, 0, 0, 0, N};
  memcpy(im, hi, 16);
  memcpy(im + 16, mnist.images, N * 784);
  memcpy(lb, hl, 8);
  memcpy(lb + 8, mnist.labels, N);
  size_t nzi = gz(im, sizeof im, zim, sizeof zim), nzl = gz(lb, sizeof lb, zlb, sizeof zlb);
  assert_true(nzi < sizeof im / 2);
  ent e[2] = {{"train-images-idx3-ubyte.gz", zim, nzi, NULL},
              {"train-labels-idx1-ubyte.gz", zlb, nzl, NULL}};
  size_t n = make_tar(e, 2, 0, buf, sizeof buf);
  srv_ds_build b = {0};
  char msg[400] = "";
  /* The budget holds the compressed entries, not the inflated images. */
  assert_int_equal(walk_budget(buf, n, 100000, &b, msg, sizeof msg), -E2BIG);
  assert_non_null(strstr(msg, "train-images-idx3-ubyte: unpacks to more than"));
  srv_ds_build_free(&b);
  /* Each file fits alone; both inflated are one byte over. */
  msg[0] = 0;
  assert_int_equal(walk_budget(buf, n, sizeof im + sizeof lb - 1, &b, msg, sizeof msg), -E2BIG);
  assert_non_null(strstr(msg, ": unpacks to more than"));
  srv_ds_build_free(&b);
  /* Room for both inflated files: the set is read. */
  if (walk_budget(buf, n, sizeof im + sizeof lb, &b, msg, sizeof msg)) fail_msg("%s", msg);
  assert_int_equal(b.train.n, N);
  assert_memory_equal(b.train.images, mnist.images, N * 784);
  assert_memory_equal(b.train.labels, mnist.labels, N);
  srv_ds_build_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_csv_digits),
      cmocka_unit_test(test_csv_names_and_refusals),
      cmocka_unit_test(test_archive_folders),
      cmocka_unit_test(test_archive_idx),
      cmocka_unit_test(test_archive_gz_idx_budget),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
