/* Unit tests of the core: kernels against hand-computed values and
 * numerical gradients, optimizers, model files, determinism, and a short
 * training on real MNIST. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>

#include "nn.h"

static uint64_t lcg = 12345;
static float frand(void) { /* deterministic uniform in [-1, 1) */
  lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((lcg >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* ---------------------------------------------------------------- antirect */

static void test_antirect_hand(void **state) {
  (void)state;
  const float x[4] = {1, 2, 3, 4};
  float y[4], inv[1], out[8];
  nn_antirect_forward(x, 1, 4, y, inv, out);
  /* c = x - 2.5 = [-1.5 -.5 .5 1.5], |c| = sqrt(5) */
  const float r5 = 1.0f / sqrtf(5.0f);
  const float want[8] = {0, 0, 0.5f * r5, 1.5f * r5, 1.5f * r5, 0.5f * r5, 0, 0};
  for (int i = 0; i < 8; i++) assert_float_equal(out[i], want[i], 1e-6);
}

static void test_antirect_all_equal(void **state) {
  (void)state;
  const float x[2 * 5] = {3, 3, 3, 3, 3, -7, -7, -7, -7, -7};
  float y[10], inv[2], out[20], dx[10], g[20];
  nn_antirect_forward(x, 2, 5, y, inv, out);
  for (int i = 0; i < 20; i++) {
    assert_false(isnan(out[i]));
    assert_float_equal(out[i], 0.0f, 0.0f);
  }
  for (int i = 0; i < 20; i++) g[i] = frand();
  nn_antirect_backward(y, inv, g, 2, 5, dx);
  for (int i = 0; i < 10; i++) assert_true(isfinite(dx[i]));
}

/* L = sum_i w_i * out_i; checks dL/dx against central differences. */
static void test_antirect_gradient(void **state) {
  (void)state;
  enum { N = 3, D = 7 };
  float x[N * D], w[N * 2 * D], y[N * D], inv[N], out[N * 2 * D], dx[N * D];
  for (int i = 0; i < N * D; i++) x[i] = frand() * 2.0f;
  for (int i = 0; i < N * 2 * D; i++) w[i] = frand();
  nn_antirect_forward(x, N, D, y, inv, out);
  nn_antirect_backward(y, inv, w, N, D, dx);
  for (int i = 0; i < N * D; i++) {
    double lp = 0, lm = 0;
    float save = x[i], h = 1e-2f;
    x[i] = save + h;
    nn_antirect_forward(x, N, D, y, inv, out);
    for (int k = 0; k < N * 2 * D; k++) lp += (double)w[k] * out[k];
    x[i] = save - h;
    nn_antirect_forward(x, N, D, y, inv, out);
    for (int k = 0; k < N * 2 * D; k++) lm += (double)w[k] * out[k];
    x[i] = save;
    double num = (lp - lm) / (2.0 * h);
    assert_true(fabs(num - dx[i]) <= 2e-3 + 2e-2 * fabs(num));
  }
}

/* ---------------------------------------------------------------- softmax */

static void test_softmax_xent(void **state) {
  (void)state;
  float z[2 * 10] = {0}, p[20], dz[20];
  uint8_t labels[2] = {3, 0};
  uint32_t correct = 99;
  z[10 + 5] = 40.0f; /* row 1: confident in 5, label 0 -> clipped to 1e-7 */
  float loss = nn_softmax_xent(z, labels, 2, 10, p, dz, &correct);
  double want = (log(10.0) + -log(1e-7)) / 2.0;
  assert_float_equal(loss, want, 1e-3);
  for (int i = 0; i < 10; i++) assert_float_equal(p[i], 0.1f, 1e-6);
  assert_float_equal(dz[3], (0.1f - 1.0f) / 2.0f, 1e-6);
  assert_float_equal(dz[4], 0.1f / 2.0f, 1e-6);
  assert_int_equal(correct, 0); /* row 0 ties -> argmax 0 != 3; row 1: 5 != 0 */
}

static void test_softmax_gradient(void **state) {
  (void)state;
  enum { N = 4, K = 10 };
  float z[N * K], p[N * K], dz[N * K];
  uint8_t labels[N] = {1, 7, 0, 9};
  for (int i = 0; i < N * K; i++) z[i] = frand() * 3.0f;
  nn_softmax_xent(z, labels, N, K, p, dz, NULL);
  for (int i = 0; i < N * K; i++) {
    float save = z[i], h = 1e-2f;
    z[i] = save + h;
    double lp = nn_softmax_xent(z, labels, N, K, p, NULL, NULL);
    z[i] = save - h;
    double lm = nn_softmax_xent(z, labels, N, K, p, NULL, NULL);
    z[i] = save;
    double num = (lp - lm) / (2.0 * h);
    assert_true(fabs(num - dz[i]) <= 1e-4 + 1e-2 * fabs(num));
  }
}

/* ---------------------------------------------------------------- models */

static void test_presets(void **state) {
  (void)state;
  nn_model *m = NULL;
  assert_int_equal(nn_model_create_preset(&m, "antirectifier"), 0);
  assert_int_equal(m->n_params, 337418);
  nn_model_free(m);
  assert_int_equal(nn_model_create_preset(&m, "relu"), 0);
  assert_int_equal(m->n_params, 669706);
  nn_model_init(m, 7);
  /* glorot_uniform limit for the first kernel: sqrt(6/(784+512)) */
  float lim = sqrtf(6.0f / (784 + 512)), mx = 0;
  for (size_t i = 0; i < 784 * 512; i++) mx = fmaxf(mx, fabsf(m->params[i]));
  assert_true(mx <= lim && mx > 0.95f * lim);
  for (size_t i = 784 * 512; i < 784 * 512 + 512; i++) assert_float_equal(m->params[i], 0, 0);
  nn_model_free(m);
  assert_int_equal(nn_model_create_preset(&m, "lenet"), NN_EINVAL);
  assert_null(m);
  nn_model_free(NULL);
}

static void test_model_create_rejects(void **state) {
  (void)state;
  nn_model *m = NULL;
  nn_layer_spec no_softmax[] = {{NN_LAYER_DENSE, 10, 0}};
  nn_layer_spec bad_rate[] = {{NN_LAYER_DROPOUT, 0, 1.0f}, {NN_LAYER_DENSE, 10, 0},
                              {NN_LAYER_SOFTMAX, 0, 0}};
  nn_layer_spec nan_rate[] = {{NN_LAYER_DROPOUT, 0, NAN}, {NN_LAYER_DENSE, 10, 0},
                              {NN_LAYER_SOFTMAX, 0, 0}};
  nn_layer_spec wrong_classes[] = {{NN_LAYER_DENSE, 9, 0}, {NN_LAYER_SOFTMAX, 0, 0}};
  assert_int_equal(nn_model_create(&m, "x", 784, no_softmax, 1), NN_EINVAL);
  assert_int_equal(nn_model_create(&m, "x", 784, bad_rate, 3), NN_EINVAL);
  assert_int_equal(nn_model_create(&m, "x", 784, nan_rate, 3), NN_EINVAL);
  assert_int_equal(nn_model_create(&m, "x", 784, wrong_classes, 2), NN_EINVAL);
  assert_null(m);
}

/* A small network with every layer type, for gradient checks. */
static nn_model *small_model(void) {
  nn_layer_spec s[] = {{NN_LAYER_DENSE, 16, 0}, {NN_LAYER_ANTIRECT, 0, 0},
                       {NN_LAYER_DROPOUT, 0, 0.3f}, {NN_LAYER_DENSE, 8, 0},
                       {NN_LAYER_RELU, 0, 0},       {NN_LAYER_DENSE, 10, 0},
                       {NN_LAYER_SOFTMAX, 0, 0}};
  nn_model *m = NULL;
  assert_int_equal(nn_model_create(&m, "small", 784, s, 7), 0);
  nn_model_init(m, 3);
  /* Non-zero biases so their gradients are exercised off the origin. */
  for (uint32_t i = 0; i < m->n_layers; i++)
    if (m->layers[i].type == NN_LAYER_DENSE)
      for (uint32_t k = 0; k < m->layers[i].out; k++)
        m->params[m->layers[i].b_off + k] = 0.1f * frand();
  return m;
}

static void test_model_gradient(void **state) {
  (void)state;
  enum { N = 5 };
  nn_model *m = small_model();
  nn_trainer *t = NULL;
  nn_train_config cfg;
  nn_train_defaults(&cfg);
  cfg.batch_size = N;
  cfg.threads = 2; /* also checks the cross-thread gradient sum */
  assert_int_equal(nn_trainer_create(&t, m, &cfg), 0);
  float *x = malloc(N * 784 * sizeof(float));
  uint8_t labels[N] = {0, 3, 9, 3, 5};
  /* Sparse like MNIST: a fifth of the pixels lit. */
  for (int i = 0; i < N * 784; i++) x[i] = frand() > 0.6f ? (frand() + 1.0f) * 0.5f : 0.0f;
  const float *g;
  nn_trainer_gradient(t, x, labels, N, &g);
  float *ana = malloc(m->n_params * sizeof(float));
  memcpy(ana, g, m->n_params * sizeof(float));
  /* Central differences per parameter. A kink (ReLU, or the antirectifier's
   * sign switch) inside the step spoils the estimate, even at two step sizes
   * when the kink sits right at the current point; one-sided differences
   * that disagree reveal it. Such parameters are skipped, at most a tenth;
   * everywhere else the analytic gradient must match. */
  size_t checked = 0, bad = 0, kinked = 0;
  for (size_t i = 0; i < m->n_params; i += (i < 784 * 16 ? 41 : 1)) {
    const float h = 2e-3f, save = m->params[i];
    double l0 = nn_trainer_gradient(t, x, labels, N, NULL);
    m->params[i] = save + h;
    double lp = nn_trainer_gradient(t, x, labels, N, NULL);
    m->params[i] = save - h;
    double lm = nn_trainer_gradient(t, x, labels, N, NULL);
    m->params[i] = save;
    double num[2] = {(lp - lm) / (2.0 * h), 0};
    num[1] = num[0] + ((lp - l0) - (l0 - lm)) / h; /* forward minus backward + central */
    checked++;
    double tol = 5e-4 + 2e-2 * fabs(num[0]); /* float loss: ~6e-5 per ulp */
    if (fabs(num[0] - num[1]) > 1e-3 + 0.1 * fabs(num[0])) {
      kinked++;
      continue;
    }
    if (fabs(num[0] - ana[i]) > tol) {
      bad++;
      fprintf(stderr, "param %zu: numeric %g analytic %g\n", i, num[0], ana[i]);
    }
  }
  fprintf(stderr, "gradient check: %zu parameters, %zu skipped at kinks\n", checked, kinked);
  assert_true(checked > 400);
  assert_true(kinked * 10 <= checked);
  assert_int_equal(bad, 0);
  free(ana);
  free(x);
  nn_trainer_free(t);
  nn_model_free(m);
}

/* ---------------------------------------------------------------- optim */

static void test_rmsprop_hand(void **state) {
  (void)state;
  nn_opt_config c;
  nn_opt_defaults(&c, NN_OPT_RMSPROP);
  float w[1] = {1.0f}, g[1] = {0.5f}, a[1] = {0};
  nn_opt_step(&c, w, g, a, 1, 1);
  assert_float_equal(a[0], 0.025f, 1e-7);
  assert_float_equal(w[0], 1.0 - 0.001 * 0.5 / sqrt(0.025 + 1e-7), 1e-7);
  nn_opt_step(&c, w, g, a, 1, 2);
  assert_float_equal(a[0], 0.0475f, 1e-7);
  assert_float_equal(w[0], 1.0 - 0.001 * 0.5 / sqrt(0.025 + 1e-7) -
                               0.001 * 0.5 / sqrt(0.0475 + 1e-7), 1e-6);
}

static void test_sgd_adam_hand(void **state) {
  (void)state;
  nn_opt_config c;
  nn_opt_defaults(&c, NN_OPT_SGD);
  c.lr = 0.1f;
  c.momentum = 0.9f;
  float w[1] = {1.0f}, g[1] = {0.5f}, v[2] = {0, 0};
  nn_opt_step(&c, w, g, v, 1, 1);
  assert_float_equal(w[0], 0.95f, 1e-6);
  nn_opt_step(&c, w, g, v, 1, 2);
  assert_float_equal(w[0], 0.855f, 1e-6);
  nn_opt_defaults(&c, NN_OPT_ADAM);
  w[0] = 1.0f;
  v[0] = v[1] = 0;
  nn_opt_step(&c, w, g, v, 1, 1);
  /* t=1: m=.05, v=.00025, lr_t = .001*sqrt(.001)/.1 */
  double lr_t = 0.001 * sqrt(0.001) / 0.1;
  assert_float_equal(w[0], 1.0 - lr_t * 0.05 / (sqrt(0.00025) + 1e-7), 1e-6);
  nn_opt_kind k;
  assert_int_equal(nn_opt_parse("adam", &k), 0);
  assert_int_equal(k, NN_OPT_ADAM);
  assert_int_equal(nn_opt_parse("Adam!", &k), NN_EINVAL);
}

/* ---------------------------------------------------------------- files */

static char tmpdir[256];

static int setup_tmp(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/mnistd-test-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state) {
  (void)state;
  DIR *d = opendir(tmpdir);
  struct dirent *e;
  char p[512];
  while (d && (e = readdir(d)))
    if (e->d_name[0] != '.') {
      snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
      unlink(p);
    }
  if (d) closedir(d);
  rmdir(tmpdir);
  return 0;
}

static size_t read_all(const char *path, uint8_t **buf) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  size_t n = (size_t)ftell(f);
  rewind(f);
  *buf = malloc(n + 16);
  assert_int_equal(fread(*buf, 1, n, f), n);
  fclose(f);
  return n;
}

static void write_all(const char *path, const uint8_t *buf, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(buf, 1, n, f), n);
  fclose(f);
}

/* Rewrites the trailing CRC so a structural change reaches the checks
 * behind the checksum. */
#include <zlib.h>
static void fix_crc(uint8_t *b, size_t n) {
  uint32_t c = (uint32_t)crc32(0, b, (uInt)(n - 4));
  for (int i = 0; i < 4; i++) b[n - 4 + i] = (uint8_t)(c >> (8 * i));
}

static int count_files(void) {
  int n = 0;
  DIR *d = opendir(tmpdir);
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static void test_model_file_roundtrip(void **state) {
  (void)state;
  char path[512];
  snprintf(path, sizeof path, "%s/a.model", tmpdir);
  nn_model *m = NULL, *l = NULL;
  nn_err err = {0};
  assert_int_equal(nn_model_create_preset(&m, "antirectifier"), 0);
  nn_model_init(m, 11);
  assert_int_equal(nn_model_save(m, path, &err), 0);
  assert_int_equal(count_files(), 1); /* no temp file left behind */
  assert_int_equal(nn_model_load(&l, path, &err), 0);
  assert_string_equal(l->arch, "antirectifier");
  assert_int_equal(l->n_params, m->n_params);
  assert_memory_equal(l->params, m->params, m->n_params * sizeof(float));
  assert_int_equal(l->n_layers, m->n_layers);
  nn_model_free(l);
  nn_model_free(m);
}

static void expect_load_error(const char *path, int code, const char *needle) {
  nn_model *l = (nn_model *)1;
  nn_err err = {0};
  int rc = nn_model_load(&l, path, &err);
  if (rc != code) fprintf(stderr, "got %d (%s), want %d\n", rc, err.msg, code);
  assert_int_equal(rc, code);
  assert_null(l);
  assert_non_null(strstr(err.msg, needle));
  assert_non_null(strstr(err.msg, path)); /* the message names the file */
}

static void test_model_file_corruption(void **state) {
  (void)state;
  char path[512], bad[512];
  snprintf(path, sizeof path, "%s/b.model", tmpdir);
  snprintf(bad, sizeof bad, "%s/bad.model", tmpdir);
  nn_model *m = NULL;
  assert_int_equal(nn_model_create_preset(&m, "relu"), 0);
  nn_model_init(m, 5);
  assert_int_equal(nn_model_save(m, path, NULL), 0);
  uint8_t *b;
  size_t n = read_all(path, &b);
  const size_t params_at = 56 + 8 * 12 + 8;

  b[params_at + 1000] ^= 0x40; /* one flipped bit in the weights */
  write_all(bad, b, n);
  expect_load_error(bad, NN_ECHECKSUM, "CRC32");
  b[params_at + 1000] ^= 0x40;

  write_all(bad, b, n - 100); /* truncated */
  expect_load_error(bad, NN_ETRUNC, "truncated");
  write_all(bad, b, 30);
  expect_load_error(bad, NN_ETRUNC, "truncated");

  write_all(bad, (const uint8_t *)"\x89PNG\r\n\x1a\n\0\0\0\0\0\0\0\0", 16); /* foreign */
  expect_load_error(bad, NN_EFORMAT, "magic");

  b[8] = 2; /* version 2 */
  write_all(bad, b, n);
  expect_load_error(bad, NN_EVERSION, "version");
  b[8] = 1;

  uint8_t *big = malloc(n + 3);
  memcpy(big, b, n);
  memset(big + n, 0, 3);
  write_all(bad, big, n + 3); /* trailing bytes */
  expect_load_error(bad, NN_EFORMAT, "unexpected bytes");
  free(big);

  b[56 + 4] = 0x13; /* first Dense claims 0x213 units: parameter count mismatch */
  b[56 + 5] = 0x02;
  fix_crc(b, n);
  write_all(bad, b, n);
  expect_load_error(bad, NN_EMISMATCH, "parameters");
  b[56 + 4] = 0x00;
  b[56 + 5] = 0x02;

  b[56 + 7 * 12] = 9; /* last layer type 9: unknown */
  fix_crc(b, n);
  write_all(bad, b, n);
  expect_load_error(bad, NN_EFORMAT, "layer list");
  b[56 + 7 * 12] = NN_LAYER_SOFTMAX;

  float nanf_ = NAN;
  memcpy(b + params_at + 40, &nanf_, 4); /* NaN with a valid CRC */
  fix_crc(b, n);
  write_all(bad, b, n);
  expect_load_error(bad, NN_EFORMAT, "NaN");

  char missing[512];
  snprintf(missing, sizeof missing, "%s/nope.model", tmpdir);
  expect_load_error(missing, NN_ENOENT, "cannot open");
  unlink(bad);
  free(b);
  nn_model_free(m);
}

static void test_model_save_failure_is_clean(void **state) {
  (void)state;
  char path[512];
  snprintf(path, sizeof path, "%s/no/such/dir/m.model", tmpdir);
  nn_model *m = NULL;
  nn_err err = {0};
  assert_int_equal(nn_model_create_preset(&m, "antirectifier"), 0);
  assert_int_equal(nn_model_save(m, path, &err), NN_ENOENT);
  assert_non_null(strstr(err.msg, path));
  /* Overwriting keeps the old file until the new one is complete. */
  snprintf(path, sizeof path, "%s/keep.model", tmpdir);
  assert_int_equal(nn_model_save(m, path, &err), 0);
  nn_model_init(m, 99);
  assert_int_equal(nn_model_save(m, path, &err), 0);
  nn_model *l = NULL;
  assert_int_equal(nn_model_load(&l, path, &err), 0);
  assert_memory_equal(l->params, m->params, m->n_params * sizeof(float));
  nn_model_free(l);
  nn_model_free(m);
  unlink(path);
}

/* ---------------------------------------------------------------- training */

static nn_dataset synth; /* a learnable synthetic set: class = brightest band */

static void make_synth(uint32_t n) {
  synth.n = n;
  synth.rows = synth.cols = 28;
  synth.images = malloc((size_t)n * 784);
  synth.labels = malloc(n);
  for (uint32_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)(i * 7 % 10);
    synth.labels[i] = c;
    for (int p = 0; p < 784; p++) {
      int band = (p / 28) * 10 / 28;
      int v = (band == c ? 200 : 20) + (int)(frand() * 40);
      synth.images[(size_t)i * 784 + p] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
}

static nn_trainer *trained(nn_model **m, uint32_t threads, uint64_t seed, int epochs,
                           nn_opt_kind opt) {
  nn_train_config cfg;
  nn_train_defaults(&cfg);
  nn_opt_defaults(&cfg.opt, opt);
  cfg.seed = seed;
  cfg.threads = threads;
  cfg.batch_size = 50;
  nn_trainer *t = NULL;
  assert_int_equal(nn_model_create_preset(m, "antirectifier"), 0);
  nn_model_init(*m, seed);
  assert_int_equal(nn_trainer_create(&t, *m, &cfg), 0);
  for (int e = 0; e < epochs; e++) assert_int_equal(nn_train_epoch(t, &synth, NULL, NULL, NULL, NULL), 0);
  return t;
}

static void test_determinism(void **state) {
  (void)state;
  for (uint32_t threads = 1; threads <= 3; threads++) {
    nn_model *a, *b, *c;
    nn_trainer *ta = trained(&a, threads, 42, 2, NN_OPT_RMSPROP);
    nn_trainer *tb = trained(&b, threads, 42, 2, NN_OPT_RMSPROP);
    nn_trainer *tc = trained(&c, threads, 43, 2, NN_OPT_RMSPROP);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    assert_memory_not_equal(a->params, c->params, a->n_params * sizeof(float));
    nn_trainer_free(ta), nn_trainer_free(tb), nn_trainer_free(tc);
    nn_model_free(a), nn_model_free(b), nn_model_free(c);
  }
}

static void test_checkpoint_resume_is_exact(void **state) {
  (void)state;
  for (int opt = NN_OPT_RMSPROP; opt <= NN_OPT_ADAM; opt++) {
    char path[512];
    snprintf(path, sizeof path, "%s/ck.model", tmpdir);
    nn_model *a, *b, *c = NULL;
    nn_trainer *ta = trained(&a, 2, 5, 3, (nn_opt_kind)opt);
    nn_trainer *tb = trained(&b, 2, 5, 1, (nn_opt_kind)opt), *tc = NULL;
    nn_err err = {0};
    assert_int_equal(nn_checkpoint_save(tb, path, &err), 0);
    assert_int_equal(nn_checkpoint_load(&c, &tc, path, &err), 0);
    assert_int_equal(nn_trainer_epoch(tc), 1);
    assert_int_equal(nn_trainer_set_threads(tc, 2), 0);
    for (int e = 0; e < 2; e++) assert_int_equal(nn_train_epoch(tc, &synth, NULL, NULL, NULL, NULL), 0);
    assert_int_equal(nn_trainer_epoch(tc), 3);
    assert_memory_equal(a->params, c->params, a->n_params * sizeof(float));
    /* A checkpoint also loads as a plain model; a plain model is no checkpoint. */
    nn_model *plain = NULL;
    nn_trainer *none = NULL;
    assert_int_equal(nn_model_load(&plain, path, &err), 0);
    assert_int_equal(nn_model_save(plain, path, &err), 0);
    nn_model *x = NULL;
    assert_int_equal(nn_checkpoint_load(&x, &none, path, &err), NN_EFORMAT);
    assert_null(x);
    assert_null(none);
    nn_model_free(plain);
    nn_trainer_free(ta), nn_trainer_free(tb), nn_trainer_free(tc);
    nn_model_free(a), nn_model_free(b), nn_model_free(c);
    unlink(path);
  }
}

static int cancel_at_3(const nn_progress *p, void *user) {
  *(int *)user = (int)p->batch;
  return p->batch == 3;
}

static void test_cancel_and_progress(void **state) {
  (void)state;
  nn_model *m;
  nn_trainer *t = trained(&m, 2, 1, 0, NN_OPT_RMSPROP);
  int last = 0;
  nn_epoch_metrics mt;
  assert_int_equal(nn_train_epoch(t, &synth, cancel_at_3, &last, NULL, &mt), NN_ECANCELED);
  assert_int_equal(last, 3);
  assert_int_equal(nn_trainer_epoch(t), 0);
  volatile int flag = 1;
  assert_int_equal(nn_train_epoch(t, &synth, NULL, NULL, &flag, &mt), NN_ECANCELED);
  assert_int_equal(nn_train_epoch(t, &synth, NULL, NULL, NULL, &mt), 0);
  assert_int_equal(mt.epoch, 1);
  assert_true(mt.seconds > 0 && mt.samples_per_second > 0);
  assert_true(isnan(mt.val_loss));
  nn_trainer_free(t);
  nn_model_free(m);
}

static void test_predict_single_matches_batch(void **state) {
  (void)state;
  nn_model *m;
  nn_trainer *t = trained(&m, 1, 9, 1, NN_OPT_RMSPROP);
  nn_workspace *w1, *wb;
  assert_int_equal(nn_workspace_create(&w1, m, 1), 0);
  assert_int_equal(nn_workspace_create(&wb, m, 64), 0);
  float pb[64 * 10], p1[10];
  assert_int_equal(nn_predict_u8(m, wb, synth.images, 64, pb), 0);
  assert_int_equal(nn_predict_u8(m, w1, synth.images, 2, p1), NN_EINVAL); /* > max_batch */
  int right = 0;
  for (int i = 0; i < 64; i++) {
    assert_int_equal(nn_predict_u8(m, w1, synth.images + (size_t)i * 784, 1, p1), 0);
    double sum = 0;
    for (int k = 0; k < 10; k++) {
      assert_float_equal(p1[k], pb[i * 10 + k], 1e-5);
      sum += p1[k];
    }
    assert_float_equal(sum, 1.0, 1e-5);
    right += nn_argmax(p1) == synth.labels[i];
  }
  assert_true(right >= 60); /* the synthetic task is easy */
  nn_workspace_free(w1);
  nn_workspace_free(wb);
  nn_trainer_free(t);
  nn_model_free(m);
}

/* A short training on real MNIST: 8,000 images, 6 epochs (375 steps),
 * > 90% on the first 2,000 test images (the harder half of t10k). */
static void test_real_mnist_short(void **state) {
  (void)state;
  const char *root = getenv("MNISTD_DATA");
  if (!root) {
    fprintf(stderr, "MNISTD_DATA not set: skipping the real-data training\n");
    skip();
  }
  char dir[512];
  snprintf(dir, sizeof dir, "%s/mnist", root);
  nn_dataset train = {0}, test = {0};
  nn_err err = {0};
  assert_int_equal(nn_dataset_load_dir(&train, dir, NN_SPLIT_TRAIN, &err), 0);
  assert_int_equal(nn_dataset_load_dir(&test, dir, NN_SPLIT_TEST, &err), 0);
  nn_dataset_truncate(&train, 8000);
  nn_dataset_truncate(&test, 2000);
  nn_model *m;
  nn_trainer *t;
  nn_workspace *ws;
  nn_train_config cfg;
  nn_train_defaults(&cfg);
  cfg.threads = 2;
  assert_int_equal(nn_model_create_preset(&m, "antirectifier"), 0);
  nn_model_init(m, 1);
  assert_int_equal(nn_trainer_create(&t, m, &cfg), 0);
  assert_int_equal(nn_workspace_create(&ws, m, 500), 0);
  for (int e = 0; e < 6; e++) assert_int_equal(nn_train_epoch(t, &train, NULL, NULL, NULL, NULL), 0);
  float loss, acc;
  assert_int_equal(nn_evaluate(m, ws, &test, &loss, &acc, NULL), 0);
  fprintf(stderr, "real MNIST, 8000 images x 6 epochs: test accuracy %.4f loss %.4f\n", acc,
          loss);
  assert_true(acc > 0.90f);
  nn_workspace_free(ws);
  nn_trainer_free(t);
  nn_model_free(m);
  nn_dataset_free(&train);
  nn_dataset_free(&test);
}

static void test_strerror(void **state) {
  (void)state;
  assert_string_equal(nn_strerror(0), "success");
  assert_non_null(strstr(nn_strerror(NN_ECHECKSUM), "corrupted"));
  assert_non_null(nn_strerror(-99999));
  assert_non_null(nn_strerror(NN_ENOSPC));
}

int main(void) {
  make_synth(600);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_antirect_hand),
      cmocka_unit_test(test_antirect_all_equal),
      cmocka_unit_test(test_antirect_gradient),
      cmocka_unit_test(test_softmax_xent),
      cmocka_unit_test(test_softmax_gradient),
      cmocka_unit_test(test_presets),
      cmocka_unit_test(test_model_create_rejects),
      cmocka_unit_test(test_model_gradient),
      cmocka_unit_test(test_rmsprop_hand),
      cmocka_unit_test(test_sgd_adam_hand),
      cmocka_unit_test_setup_teardown(test_model_file_roundtrip, setup_tmp, teardown_tmp),
      cmocka_unit_test_setup_teardown(test_model_file_corruption, setup_tmp, teardown_tmp),
      cmocka_unit_test_setup_teardown(test_model_save_failure_is_clean, setup_tmp, teardown_tmp),
      cmocka_unit_test(test_determinism),
      cmocka_unit_test_setup_teardown(test_checkpoint_resume_is_exact, setup_tmp, teardown_tmp),
      cmocka_unit_test(test_cancel_and_progress),
      cmocka_unit_test(test_predict_single_matches_batch),
      cmocka_unit_test(test_real_mnist_short),
      cmocka_unit_test(test_strerror),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nn_dataset_free(&synth);
  return rc;
}
