/* Unit tests of the batch_norm layer: spec validation, a hand-computed
 * forward pass, numerical gradients in training mode (vectors and feature
 * maps, odd sizes, uneven and empty shards), whole-batch statistics across
 * trainer threads (equal to one thread's, bit-identical run to run), the
 * moving statistics as Keras updates them, inference on them, and model
 * files and checkpoints keeping them. */
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

#include "nn.h"
#include "nn_internal.h"
#include "srv_spec.h"

static uint64_t lcg = 4242;
static float frand(void) { /* deterministic uniform in [-1, 1) */
  lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((lcg >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

#define CONV(f, k, s, act)                                                                    \
  {.type = NN_LAYER_CONV2D, .filters = (f), .kernel = (k), .stride = (s), .activation = (act)}
#define POOL(k) {.type = NN_LAYER_MAXPOOL, .kernel = (k), .stride = (k)}
#define FLAT {.type = NN_LAYER_FLATTEN}
#define DENSE(u) {.type = NN_LAYER_DENSE, .units = (u)}
#define RELU {.type = NN_LAYER_RELU}
#define BN {.type = NN_LAYER_BATCHNORM, .momentum = NN_BN_MOMENTUM, .epsilon = NN_BN_EPSILON}
#define BNM(mo, eps) {.type = NN_LAYER_BATCHNORM, .momentum = (mo), .epsilon = (eps)}

/* ---------------------------------------------------------------- specs */

static void expect_error(const nn_layer_spec *s, uint32_t n, const char *msg) {
  nn_err err = {0};
  int rc = nn_spec_check(s, n, NN_INPUT_MNIST, NN_CLASSES, 0, 1, NULL, &err);
  if (rc != NN_EINVAL || !strstr(err.msg, msg))
    fprintf(stderr, "got %d '%s', want '%s'\n", rc, err.msg, msg);
  assert_int_equal(rc, NN_EINVAL);
  assert_non_null(strstr(err.msg, msg));
}

static void test_spec(void **state) {
  (void)state;
  assert_string_equal(nn_layer_type_name(NN_LAYER_BATCHNORM), "batch_norm");
  nn_layer_type t;
  assert_int_equal(nn_layer_type_parse("batch_norm", &t), 0);
  assert_int_equal(t, NN_LAYER_BATCHNORM);

  /* Four per feature, as Keras counts them: per unit of a vector, per
   * channel of a feature map. */
  nn_layer_spec flat[] = {DENSE(5), BN, RELU, DENSE(10)};
  size_t np = 0;
  assert_int_equal(nn_spec_check(flat, 4, NN_INPUT_MNIST, 10, 128, 2, &np, NULL), 0);
  assert_int_equal(np, 784 * 5 + 5 + 4 * 5 + 5 * 10 + 10);
  nn_layer_spec map[] = {CONV(3, 3, 1, NN_ACT_RELU), BN, POOL(2), FLAT, DENSE(10)};
  assert_int_equal(nn_spec_check(map, 5, NN_INPUT_MNIST, 10, 128, 2, &np, NULL), 0);
  assert_int_equal(np, 3 * 9 + 3 + 4 * 3 + 13 * 13 * 3 * 10 + 10);

  nn_layer_spec bad[] = {DENSE(5), BNM(1.0f, 0.001f), DENSE(10)};
  expect_error(bad, 3, "layers[1] batch_norm: momentum must be in [0, 1), not 1");
  bad[1].momentum = -0.5f;
  expect_error(bad, 3, "layers[1] batch_norm: momentum must be in [0, 1)");
  bad[1].momentum = NAN;
  expect_error(bad, 3, "layers[1] batch_norm: momentum must be in [0, 1)");
  bad[1].momentum = 0.f; /* allowed: the moving statistics are the last batch's */
  assert_int_equal(nn_spec_check(bad, 3, NN_INPUT_MNIST, 10, 0, 1, NULL, NULL), 0);
  bad[1].epsilon = 0.f;
  expect_error(bad, 3, "layers[1] batch_norm: epsilon must be in (0, 1], not 0");
  bad[1].epsilon = 2.f;
  expect_error(bad, 3, "layers[1] batch_norm: epsilon must be in (0, 1]");

  /* JSON: Keras' defaults when left out, the fields named when wrong. */
  char msg[256];
  nn_layer_spec s[NN_MAX_SPECS];
  uint32_t n = 0;
  cJSON *j = cJSON_Parse("[{\"type\":\"batch_norm\"},{\"type\":\"batch_norm\",\"momentum\":0.9,"
                         "\"epsilon\":1e-5},{\"type\":\"dense\",\"units\":10}]");
  assert_int_equal(srv_spec_from_json(j, s, &n, msg, sizeof msg), 0);
  assert_int_equal(n, 3);
  assert_int_equal(s[0].type, NN_LAYER_BATCHNORM);
  assert_true(s[0].momentum == 0.99f && s[0].epsilon == 0.001f);
  assert_true(s[1].momentum == 0.9f && s[1].epsilon == 1e-5f);
  cJSON *back = srv_spec_to_json(s, n);
  char *txt = cJSON_PrintUnformatted(back);
  assert_non_null(strstr(txt, "{\"type\":\"batch_norm\",\"momentum\":0.99,\"epsilon\":0.001}"));
  assert_non_null(strstr(txt, "{\"type\":\"batch_norm\",\"momentum\":0.9,\"epsilon\":1e-05}"));
  nn_layer_spec s2[NN_MAX_SPECS];
  uint32_t n2 = 0;
  assert_int_equal(srv_spec_from_json(back, s2, &n2, msg, sizeof msg), 0);
  assert_memory_equal(s, s2, n * sizeof *s); /* read back: the same structs */
  free(txt);
  cJSON_Delete(back);
  cJSON_Delete(j);
  const struct { const char *json, *msg; } errs[] = {
      {"[{\"type\":\"batch_norm\",\"momentum\":1}]", "layers[0] batch_norm: momentum must be"},
      {"[{\"type\":\"batch_norm\",\"momentum\":\"high\"}]", "layers[0] batch_norm: momentum"},
      {"[{\"type\":\"batch_norm\",\"epsilon\":0}]", "layers[0] batch_norm: epsilon must be"},
      {"[{\"type\":\"batch_norm\",\"epsilon\":-1}]", "layers[0] batch_norm: epsilon must be"},
      {"[{\"type\":\"batch_norm\",\"units\":3}]", "layers[0] batch_norm: unknown field \"units\""},
  };
  /* GET /v1/architectures lists the type and its fields. */
  cJSON *arch = srv_architectures_json();
  char *at = cJSON_PrintUnformatted(arch);
  assert_non_null(strstr(at, "{\"type\":\"batch_norm\",\"fields\":\"type, momentum, epsilon\"}"));
  free(at);
  cJSON_Delete(arch);
  for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) {
    j = cJSON_Parse(errs[i].json);
    assert_int_equal(srv_spec_from_json(j, s, &n, msg, sizeof msg), -EINVAL);
    if (!strstr(msg, errs[i].msg)) fail_msg("%s: got '%s'", errs[i].json, msg);
    cJSON_Delete(j);
  }
}

/* ---------------------------------------------------------------- forward */

static void test_forward_hand(void **state) {
  (void)state;
  /* Two channels over 3 rows; Keras: gamma * (x - mean) / sqrt(var + eps)
   * + beta with the biased variance. Channel 0: mean 3, var 14/3; channel
   * 1: mean 20, var 200/3 (values from Python's math module). */
  nn_layer l = {.type = NN_LAYER_BATCHNORM, .ishape = {1, 1, 2}, .oshape = {1, 1, 2},
                .in = 2, .out = 2, .w_off = 0, .b_off = 2, .epsilon = 0.001f, .momentum = 0.9f};
  float p[8] = {2, 0.5f, 1, -1, 0, 0, 1, 1}; /* gamma, beta, moving mean, moving var */
  const float x[6] = {1, 10, 2, 20, 6, 30};
  const float want[6] = {-0.851442f, -1.612368f, 0.074279f, -1.0f, 3.777163f, -0.387632f};
  float y[6], stat[6];
  double *acc = malloc(nn_bn_scratch_bytes(2));
  nn_bn_fwd(&l, p, x, 3, 0, 1, NULL, acc, stat, y);
  for (int i = 0; i < 6; i++) assert_float_equal(y[i], want[i], 2e-5);
  assert_float_equal(stat[0], 3.0f, 1e-6);
  assert_float_equal(stat[1], 20.0f, 1e-6);
  assert_float_equal(stat[4], 14.0f / 3, 1e-5);
  assert_float_equal(stat[5], 200.0f / 3, 1e-4);
  /* The same rows as a 3x1x2 feature map of one sample: per channel over
   * height and width too. */
  l.ishape = l.oshape = (nn_shape){3, 1, 2};
  l.in = l.out = 6;
  float y2[6];
  nn_bn_fwd(&l, p, x, 1, 0, 1, NULL, acc, stat, y2);
  assert_memory_equal(y, y2, sizeof y);
  /* Keras' moving update, momentum 0.9. */
  nn_bn_update_moving(&l, p, stat);
  assert_float_equal(p[4], 0.1f * 3.0f, 1e-6);
  assert_float_equal(p[5], 0.1f * 20.0f, 1e-6);
  assert_float_equal(p[6], 0.9f + 0.1f * 14.0f / 3, 1e-6);
  assert_float_equal(p[7], 0.9f + 0.1f * 200.0f / 3, 1e-5);
  /* Inference: the moving statistics. */
  nn_bn_fwd(&l, p, x, 1, 0, 0, NULL, acc, stat, y2);
  for (int i = 0; i < 6; i++) {
    int k = i % 2;
    double w = p[k] * (x[i] - p[4 + k]) / sqrt(p[6 + k] + 0.001) + p[2 + k];
    assert_float_equal(y2[i], w, 1e-5);
  }
  free(acc);
}

/* oneDNN's channel blocks ([n][c/B][h][w][B], after a blocked convolution):
 * the same statistics, outputs and gradients as NHWC, element for element. */
static void test_blocked_layout(void **state) {
  (void)state;
  enum { N = 3, H = 2, W = 3, C = 4, B = 2, E = N * H * W * C };
  nn_layer l = {.type = NN_LAYER_BATCHNORM, .ishape = {H, W, C}, .oshape = {H, W, C},
                .in = H * W * C, .out = H * W * C, .w_off = 0, .b_off = C, .epsilon = 0.001f,
                .momentum = 0.9f};
  float p[4 * C], x[E], xb[E], dy[E], dyb[E], y[E], yb[E], dx[E], dxb[E];
  float st[3 * C], stb[3 * C], g[4 * C], gb[4 * C];
  lcg = 21;
  for (int k = 0; k < C; k++) p[k] = 1 + 0.3f * frand(), p[C + k] = frand(), p[2 * C + k] = 0,
                              p[3 * C + k] = 1;
  /* NHWC index -> blocked index. */
  for (int n = 0; n < N; n++)
    for (int q = 0; q < H * W; q++)
      for (int c = 0; c < C; c++) {
        int a = (n * H * W + q) * C + c, b = ((n * (C / B) + c / B) * H * W + q) * B + c % B;
        x[a] = xb[b] = frand() * (1 + c);
        dy[a] = dyb[b] = frand();
      }
  double *acc = malloc(nn_bn_scratch_bytes(C));
  nn_bn_fwd(&l, p, x, N, 0, 1, NULL, acc, st, y);
  nn_bn_fwd(&l, p, xb, N, B, 1, NULL, acc, stb, yb);
  nn_bn_bwd(&l, p, x, dy, N, 0, 1, NULL, acc, st, g, dx);
  nn_bn_bwd(&l, p, xb, dyb, N, B, 1, NULL, acc, stb, gb, dxb);
  for (int k = 0; k < 3 * C; k++) assert_float_equal(st[k], stb[k], 1e-6);
  for (int k = 0; k < 2 * C; k++) assert_float_equal(g[k], gb[k], 1e-5);
  for (int n = 0; n < N; n++)
    for (int q = 0; q < H * W; q++)
      for (int c = 0; c < C; c++) {
        int a = (n * H * W + q) * C + c, b = ((n * (C / B) + c / B) * H * W + q) * B + c % B;
        assert_float_equal(y[a], yb[b], 1e-6);
        assert_float_equal(dx[a], dxb[b], 1e-6);
      }
  free(acc);
}

/* ---------------------------------------------------------------- models */

static float *make_x(uint32_t n) {
  /* Rows of different brightness, so that shards' statistics differ. */
  float *x = malloc((size_t)n * 784 * sizeof(float));
  for (uint32_t r = 0; r < n; r++)
    for (int i = 0; i < 784; i++) {
      float v = frand() > 0.3f ? (frand() + 1.0f) * 0.5f * (0.3f + 0.2f * (float)r) : 0.0f;
      x[(size_t)r * 784 + i] = v > 1.f ? 1.f : v;
    }
  return x;
}

static void randomise_bn(nn_model *m) {
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    if (l->type == NN_LAYER_DENSE || l->type == NN_LAYER_CONV2D)
      for (uint32_t k = 0; k < l->oshape.c; k++) m->params[l->b_off + k] = 0.1f * frand();
    if (l->type == NN_LAYER_BATCHNORM)
      for (uint32_t k = 0; k < l->ishape.c; k++) {
        m->params[l->w_off + k] = 1.0f + 0.5f * frand();   /* gamma */
        m->params[l->b_off + k] = 0.2f * frand();          /* beta */
        m->params[l->b_off + l->ishape.c + k] = 0.1f * frand();            /* moving mean */
        m->params[l->b_off + 2 * l->ishape.c + k] = 1.0f + 0.5f * frand(); /* moving var */
      }
  }
}

/* Vectors: batch_norm on the image itself (one channel, the first layer:
 * no input gradient), on a dense layer's units (odd width), and with a
 * dense layer right below it (its bias gradient). */
static nn_model *flat_model(uint64_t seed) {
  nn_layer_spec s[] = {BN, DENSE(7), BNM(0.9f, 0.01f), RELU, DENSE(10)};
  nn_model *m;
  assert_int_equal(nn_model_create_spec(&m, "bnflat", NN_INPUT_MNIST, s, 5, NULL), 0);
  nn_model_init(m, seed);
  lcg = seed;
  randomise_bn(m);
  return m;
}

/* Feature maps: 3 channels after a convolution and its ReLU, then pooling
 * (not fused with the convolution any more), an odd map (3x3x2) without an
 * activation before batch_norm, flatten, dense. */
static nn_model *map_model(uint64_t seed) {
  nn_layer_spec s[] = {CONV(3, 3, 2, NN_ACT_RELU), BN, POOL(2), CONV(2, 3, 1, NN_ACT_NONE),
                       BN, FLAT, DENSE(10)};
  nn_model *m;
  assert_int_equal(nn_model_create_spec(&m, "bnmap", NN_INPUT_MNIST, s, 7, NULL), 0);
  assert_int_equal(m->layers[2].type, NN_LAYER_BATCHNORM);
  assert_int_equal(m->layers[2].ishape.c, 3);
  assert_int_equal(m->layers[5].ishape.h, 4);
  nn_model_init(m, seed);
  lcg = seed;
  randomise_bn(m);
  return m;
}

/* The cnn preset's order with batch_norm between each convolution and its
 * pooling, 32 and 16 filters (oneDNN's channel blocks: 32 are 2 blocks on
 * AVX-512, 4 on AVX2) and shards of 16 rows: the convolution-with-pooling
 * pieces must not apply across the batch_norm. */
static float g_drop = 0.5f; /* cnn_bn_model's dropout (other masks with other thread counts) */
static float g_momentum = NN_BN_MOMENTUM;

static nn_model *cnn_bn_model(uint64_t seed) {
  nn_layer_spec s[] = {CONV(32, 3, 1, NN_ACT_RELU), BNM(g_momentum, 0.001f), POOL(2),
                       CONV(16, 3, 2, NN_ACT_RELU), BNM(g_momentum, 0.001f), POOL(2), FLAT,
                       {.type = NN_LAYER_DROPOUT, .rate = g_drop}, DENSE(10)};
  nn_model *m;
  assert_int_equal(nn_model_create_spec(&m, "bncnn", NN_INPUT_MNIST, s, 9, NULL), 0);
  nn_model_init(m, seed);
  lcg = seed;
  randomise_bn(m);
  return m;
}

static nn_trainer *trainer(nn_model *m, uint32_t threads, uint32_t batch, nn_opt_kind opt) {
  nn_train_config cfg;
  nn_train_defaults(&cfg);
  nn_opt_defaults(&cfg.opt, opt);
  cfg.batch_size = batch;
  cfg.threads = threads;
  nn_trainer *t;
  assert_int_equal(nn_trainer_create(&t, m, &cfg), 0);
  return t;
}

/* ---------------------------------------------------------------- gradients */

/* Central differences against nn_trainer_gradient (batch statistics across
 * the shards) for every step-th parameter and every batch_norm parameter. */
/* max_kinked: the share of parameters that may be skipped at kinks. */
static void check_gradient(nn_model *(*make)(uint64_t), uint32_t N, size_t step,
                           double max_kinked) {
  for (uint32_t threads = 1; threads <= 3; threads++) {
    nn_model *m = make(5);
    nn_trainer *t = trainer(m, threads, N, NN_OPT_RMSPROP);
    lcg = 99;
    float *x = make_x(N);
    uint8_t labels[64];
    for (uint32_t i = 0; i < N; i++) labels[i] = (uint8_t)(i * 7 % 10);
    const float *g;
    nn_trainer_gradient(t, x, labels, N, &g);
    float *ana = malloc(m->n_params * sizeof(float));
    memcpy(ana, g, m->n_params * sizeof(float));
    uint8_t *is_bn = calloc(m->n_params, 1);
    for (uint32_t i = 0; i < m->n_layers; i++)
      if (m->layers[i].type == NN_LAYER_BATCHNORM)
        memset(is_bn + m->layers[i].w_off, 1, 4 * (size_t)m->layers[i].ishape.c);
    size_t checked = 0, bad = 0, kinked = 0, bn_checked = 0;
    double bn_max = 0;
    for (size_t i = 0; i < m->n_params; i++) {
      if (i % step && !is_bn[i]) continue;
      const float save = m->params[i];
      double num[2], one_sided = 0, l0 = nn_trainer_gradient(t, x, labels, N, NULL);
      for (int k = 0; k < 2; k++) {
        const float h = k ? 5e-4f : 1e-3f;
        m->params[i] = save + h;
        double lp = nn_trainer_gradient(t, x, labels, N, NULL);
        m->params[i] = save - h;
        double lm = nn_trainer_gradient(t, x, labels, N, NULL);
        num[k] = (lp - lm) / (2.0 * h);
        if (k) one_sided = fabs((lp - l0) - (l0 - lm)) / h;
      }
      m->params[i] = save;
      checked++;
      bn_checked += is_bn[i];
      if (is_bn[i]) bn_max = fmax(bn_max, fabs(ana[i]));
      if (fabs(num[0] - num[1]) > 2e-4 + 0.01 * fabs(num[1]) ||
          one_sided > 1e-3 + 0.02 * fabs(num[1])) {
        kinked++;
        continue;
      }
      if (fabs(num[1] - ana[i]) > 5e-4 + 2e-2 * fabs(num[1])) {
        bad++;
        fprintf(stderr, "param %zu%s: numeric %g analytic %g\n", i, is_bn[i] ? " (bn)" : "",
                num[1], ana[i]);
      }
    }
    fprintf(stderr, "%s gradient check, batch %u, %u threads: %zu parameters (%zu of "
            "batch_norm), %zu skipped at kinks\n", m->arch, N, threads, checked, bn_checked,
            kinked);
    assert_int_equal(bad, 0);
    assert_true((double)kinked <= max_kinked * (double)checked);
    assert_true(bn_max > 1e-3); /* gamma and beta gradients that are there */
    free(is_bn);
    free(ana);
    free(x);
    nn_trainer_free(t);
    nn_model_free(m);
  }
}

static void test_gradient_flat(void **state) {
  (void)state;
  check_gradient(flat_model, 5, 13, 0.2); /* shards of 5: 2+3, 1+2+2 */
  check_gradient(flat_model, 2, 29, 0.2); /* 3 threads: one shard without rows */
}

static void test_gradient_map(void **state) {
  (void)state;
  check_gradient(map_model, 5, 3, 0.2);
}

static void test_gradient_cnn_order(void **state) {
  (void)state;
  /* Most parameters checked are batch_norm's right before a pooling: a
   * step in one gamma or beta moves a whole channel and switches maxima
   * in many windows, so more of them sit at kinks (20-36 of 169 seen). */
  check_gradient(cnn_bn_model, 16, 97, 1.0 / 3);
  /* Here the batch_norm layers run on oneDNN's channel blocks (whole
   * blocks on AVX-512 and AVX2): the gradients above went through that
   * layout. */
  nn_model *m = cnn_bn_model(1);
  nn_workspace *ws;
  assert_int_equal(nn_workspace_create(&ws, m, 16), 0);
  assert_int_equal(m->layers[2].type, NN_LAYER_BATCHNORM);
  assert_int_equal(m->layers[6].type, NN_LAYER_BATCHNORM);
  fprintf(stderr, "bncnn: batch_norm inputs blocked: %d %d\n", ws->blk[1], ws->blk[5]);
  assert_true(ws->blk[1] && ws->blk[2] && ws->blk[5] && ws->blk[6]);
  nn_workspace_free(ws);
  nn_model_free(m);
}

/* ---------------------------------------------------------------- shards */

/* One SGD step (the update is proportional to the gradient) with 1, 2 and 3
 * threads: statistics of each shard alone ("ghost" batch norm) would give
 * other gradients and other moving statistics. Each thread count run twice
 * must agree to the bit. */
static void check_threads(nn_model *(*make)(uint64_t), uint32_t N) {
  lcg = 7;
  float *x = make_x(N);
  uint8_t labels[64];
  for (uint32_t i = 0; i < N; i++) labels[i] = (uint8_t)(i * 3 % 10);
  nn_model *ref = NULL;
  float *ref_g = NULL;
  for (uint32_t threads = 1; threads <= 3; threads++) {
    nn_model *runs[2];
    float *grads[2];
    for (int r = 0; r < 2; r++) {
      nn_model *m = runs[r] = make(3);
      nn_trainer *t = trainer(m, threads, N, NN_OPT_SGD);
      const float *g;
      nn_trainer_gradient(t, x, labels, N, &g);
      grads[r] = malloc(m->n_params * sizeof(float));
      memcpy(grads[r], g, m->n_params * sizeof(float));
      float loss;
      assert_int_equal(nn_train_batch(t, x, labels, N, &loss), 0);
      assert_int_equal(nn_train_batch(t, x, labels, N, &loss), 0);
      nn_trainer_free(t);
    }
    nn_model *m = runs[0];
    assert_memory_equal(grads[0], grads[1], m->n_params * sizeof(float));
    assert_memory_equal(runs[0]->params, runs[1]->params, m->n_params * sizeof(float));
    nn_model_free(runs[1]);
    free(grads[1]);
    if (!ref) {
      ref = m;
      ref_g = grads[0];
      continue;
    }
    double gmax = 0;
    for (size_t i = 0; i < m->n_params; i++) gmax = fmax(gmax, fabs(ref_g[i]));
    for (size_t i = 0; i < m->n_params; i++) {
      if (fabs(grads[0][i] - ref_g[i]) > 1e-6 + 1e-4 * gmax)
        fail_msg("%s batch %u: gradient %zu with %u threads %g, one thread %g", m->arch, N, i,
                 threads, grads[0][i], ref_g[i]);
      if (fabs(m->params[i] - ref->params[i]) > 1e-5 * (1 + fabs(ref->params[i])))
        fail_msg("%s batch %u: parameter %zu after two steps with %u threads %g, one thread %g",
                 m->arch, N, i, threads, m->params[i], ref->params[i]);
    }
    nn_model_free(m);
    free(grads[0]);
  }
  nn_model_free(ref);
  free(ref_g);
  free(x);
}

static void test_threads_whole_batch(void **state) {
  (void)state;
  check_threads(flat_model, 7);
  check_threads(flat_model, 2); /* 3 threads: a shard without rows */
  check_threads(map_model, 5);
  g_drop = 0.f;
  check_threads(cnn_bn_model, 33);
  g_drop = 0.5f;
}

/* The same check through nn_train_epoch with dropout: bit-identical for a
 * thread count, and the network learns (synthetic, separable data). */
static void test_epochs_deterministic(void **state) {
  (void)state;
  nn_dataset ds = {.n = 300, .rows = 28, .cols = 28};
  ds.images = malloc((size_t)ds.n * 784);
  ds.labels = malloc(ds.n);
  lcg = 11;
  for (uint32_t i = 0; i < ds.n; i++) {
    uint8_t c = (uint8_t)(i * 7 % 10);
    ds.labels[i] = c;
    for (int p = 0; p < 784; p++) {
      int band = (p % 28) * 10 / 28, v = (band == c ? 200 : 20) + (int)(frand() * 40);
      ds.images[(size_t)i * 784 + p] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
  /* 50 steps: momentum 0.9 lets the moving statistics catch up (with
   * Keras' 0.99 they would still be 60% the initial 0 and 1). */
  g_momentum = 0.9f;
  for (uint32_t threads = 1; threads <= 3; threads++) {
    nn_model *m[2];
    for (int r = 0; r < 2; r++) {
      m[r] = cnn_bn_model(9);
      nn_trainer *t = trainer(m[r], threads, 32, NN_OPT_ADAM);
      for (int e = 0; e < 5; e++) assert_int_equal(nn_train_epoch(t, &ds, NULL, NULL, NULL, NULL), 0);
      nn_trainer_free(t);
    }
    assert_memory_equal(m[0]->params, m[1]->params, m[0]->n_params * sizeof(float));
    nn_workspace *ws;
    float acc;
    assert_int_equal(nn_workspace_create(&ws, m[0], 64), 0);
    assert_int_equal(nn_evaluate(m[0], ws, &ds, NULL, &acc, NULL), 0);
    fprintf(stderr, "bncnn on the synthetic set, %u threads: accuracy %.3f\n", threads,
            (double)acc);
    assert_true(acc > 0.6f);
    nn_workspace_free(ws);
    nn_model_free(m[0]);
    nn_model_free(m[1]);
  }
  g_momentum = NN_BN_MOMENTUM;
  free(ds.images);
  free(ds.labels);
}

/* ---------------------------------------------------------------- moving */

/* Per pixel: flatten, batch_norm(784 units, momentum 0.8), dense. After each
 * Adam step the moving statistics are exactly Keras' update from the
 * batch's mean and biased variance, which the test computes in double: the
 * optimizer never touches them. */
static void test_moving_statistics(void **state) {
  (void)state;
  enum { N = 6 };
  nn_layer_spec s[] = {FLAT, BNM(0.8f, 0.001f), DENSE(10)};
  for (uint32_t threads = 1; threads <= 3; threads += 2) {
    nn_model *m;
    assert_int_equal(nn_model_create_spec(&m, "bnmoving", NN_INPUT_MNIST, s, 3, NULL), 0);
    nn_model_init(m, 1);
    const nn_layer *l = &m->layers[1];
    assert_int_equal(l->type, NN_LAYER_BATCHNORM);
    const float *gamma = m->params + l->w_off, *beta = m->params + l->b_off;
    const float *mm = beta + 784, *mv = beta + 2 * 784;
    for (int k = 0; k < 784; k++) {
      assert_true(gamma[k] == 1.f && beta[k] == 0.f && mm[k] == 0.f && mv[k] == 1.f);
    }
    lcg = 5;
    float *x = make_x(N);
    uint8_t labels[N] = {0, 1, 2, 3, 4, 5};
    nn_trainer *t = trainer(m, threads, N, NN_OPT_ADAM);
    double em[784], ev[784];
    for (int k = 0; k < 784; k++) em[k] = 0, ev[k] = 1;
    for (int step = 0; step < 2; step++) {
      float loss;
      assert_int_equal(nn_train_batch(t, x, labels, N, &loss), 0);
      for (int k = 0; k < 784; k++) {
        double mean = 0, var = 0;
        for (int r = 0; r < N; r++) mean += x[r * 784 + k];
        mean /= N;
        for (int r = 0; r < N; r++) var += (x[r * 784 + k] - mean) * (x[r * 784 + k] - mean);
        var /= N;
        em[k] = em[k] * 0.8 + mean * 0.2;
        ev[k] = ev[k] * 0.8 + var * 0.2;
        if (fabs(mm[k] - em[k]) > 1e-6 || fabs(mv[k] - ev[k]) > 1e-6)
          fail_msg("step %d unit %d: moving %g %g, want %g %g", step, k, mm[k], mv[k], em[k],
                   ev[k]);
      }
    }
    /* gamma and beta did move (Adam), on the units that vary. */
    int moved = 0;
    for (int k = 0; k < 784; k++) moved += gamma[k] != 1.f && beta[k] != 0.f;
    assert_true(moved > 100);
    /* The gradient block holds zeros where the moving statistics are. */
    const float *g;
    nn_trainer_gradient(t, x, labels, N, &g);
    for (int k = 0; k < 2 * 784; k++) assert_true(g[l->b_off + 784 + k] == 0.f);
    /* ...and nn_trainer_gradient leaves them alone. */
    assert_true(fabs(mm[0] - em[0]) <= 1e-6);
    nn_trainer_free(t);
    free(x);
    nn_model_free(m);
  }
}

/* Predictions use the moving statistics: an image's probabilities do not
 * depend on the rest of its batch, and equal the formula's. */
static void test_inference_moving(void **state) {
  (void)state;
  nn_layer_spec s[] = {FLAT, BNM(0.99f, 0.01f), DENSE(10)};
  nn_model *m;
  assert_int_equal(nn_model_create_spec(&m, "bninfer", NN_INPUT_MNIST, s, 3, NULL), 0);
  nn_model_init(m, 2);
  lcg = 3;
  randomise_bn(m);
  const nn_layer *bl = &m->layers[1], *dl = &m->layers[2];
  lcg = 8;
  float *x = make_x(4);
  nn_workspace *ws;
  assert_int_equal(nn_workspace_create(&ws, m, 4), 0);
  float p4[40], p1[10];
  assert_int_equal(nn_predict_f32(m, ws, x, 4, p4), 0);
  for (int r = 0; r < 4; r++) {
    assert_int_equal(nn_predict_f32(m, ws, x + r * 784, 1, p1), 0);
    double z[10], zmax = -1e30, sum = 0;
    for (int o = 0; o < 10; o++) {
      z[o] = m->params[dl->b_off + o];
      for (int k = 0; k < 784; k++) {
        const float *p = m->params + bl->w_off;
        double y = p[k] * (x[r * 784 + k] - p[1568 + k]) / sqrt(p[2352 + k] + 0.01) + p[784 + k];
        z[o] += m->params[dl->w_off + o * 784 + k] * y;
      }
      zmax = fmax(zmax, z[o]);
    }
    for (int o = 0; o < 10; o++) sum += exp(z[o] - zmax);
    for (int o = 0; o < 10; o++) {
      assert_float_equal(p1[o], exp(z[o] - zmax) / sum, 1e-5);
      assert_float_equal(p4[r * 10 + o], p1[o], 1e-6);
    }
  }
  nn_workspace_free(ws);
  free(x);
  nn_model_free(m);
}

/* ---------------------------------------------------------------- files */

static void test_model_file(void **state) {
  (void)state;
  char dir[] = "/tmp/mnistd_bn_XXXXXX", path[512], ck[512];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/bn.model", dir);
  snprintf(ck, sizeof ck, "%s/bn.ckpt", dir);
  nn_layer_spec s[] = {CONV(4, 3, 1, NN_ACT_RELU), BNM(0.95f, 0.002f), POOL(2), FLAT,
                       DENSE(6), BN, DENSE(10)};
  nn_model *m, *l = NULL, *cm = NULL;
  assert_int_equal(nn_model_create_spec(&m, "bnfile", NN_INPUT_MNIST, s, 7, NULL), 0);
  nn_model_init(m, 4);
  nn_trainer *t = trainer(m, 2, 8, NN_OPT_ADAM), *ct = NULL;
  lcg = 6;
  float *x = make_x(8);
  uint8_t labels[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  float loss;
  assert_int_equal(nn_train_batch(t, x, labels, 8, &loss), 0);
  const nn_layer *bl = &m->layers[2];
  assert_true(m->params[bl->b_off + 4] != 0.f); /* moving mean, moved */
  nn_err err = {0};
  assert_int_equal(nn_model_save(m, path, &err), 0);
  assert_int_equal(nn_model_load(&l, path, &err), 0);
  assert_int_equal(l->n_specs, 7);
  assert_memory_equal(l->specs, m->specs, 7 * sizeof *s);
  assert_true(l->specs[1].momentum == 0.95f && l->specs[1].epsilon == 0.002f);
  assert_true(l->specs[5].momentum == 0.99f && l->specs[5].epsilon == 0.001f);
  assert_true(l->layers[2].momentum == 0.95f && l->layers[2].epsilon == 0.002f);
  assert_int_equal(l->n_params, m->n_params);
  assert_memory_equal(l->params, m->params, m->n_params * sizeof(float));
  nn_workspace *wa, *wb;
  float pa[80], pb[80];
  assert_int_equal(nn_workspace_create(&wa, m, 8), 0);
  assert_int_equal(nn_workspace_create(&wb, l, 8), 0);
  assert_int_equal(nn_predict_f32(m, wa, x, 8, pa), 0);
  assert_int_equal(nn_predict_f32(l, wb, x, 8, pb), 0);
  assert_memory_equal(pa, pb, sizeof pa);
  /* A checkpoint continues exactly, moving statistics included. */
  assert_int_equal(nn_checkpoint_save(t, ck, &err), 0);
  assert_int_equal(nn_checkpoint_load(&cm, &ct, ck, &err), 0);
  assert_int_equal(nn_trainer_set_threads(ct, 2), 0);
  assert_int_equal(nn_train_batch(t, x, labels, 8, &loss), 0);
  assert_int_equal(nn_train_batch(ct, x, labels, 8, &loss), 0);
  assert_memory_equal(cm->params, m->params, m->n_params * sizeof(float));
  /* A damaged epsilon (0) is refused as an invalid layer list. */
  FILE *f = fopen(path, "rb");
  static uint8_t buf[1 << 20];
  size_t len = fread(buf, 1, sizeof buf, f);
  fclose(f);
  memset(buf + 64 + 32 + 4, 0, 4); /* spec 1's units slot: epsilon's bits */
  nn_model *bad = NULL;
  assert_int_equal(nn_model_load_mem(&bad, buf, len, &err), NN_EFORMAT);
  assert_non_null(strstr(err.msg, "epsilon"));
  nn_workspace_free(wa);
  nn_workspace_free(wb);
  nn_trainer_free(ct);
  nn_model_free(cm);
  nn_trainer_free(t);
  nn_model_free(l);
  nn_model_free(m);
  free(x);
  unlink(path);
  unlink(ck);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spec),
      cmocka_unit_test(test_forward_hand),
      cmocka_unit_test(test_blocked_layout),
      cmocka_unit_test(test_gradient_flat),
      cmocka_unit_test(test_gradient_map),
      cmocka_unit_test(test_gradient_cnn_order),
      cmocka_unit_test(test_threads_whole_batch),
      cmocka_unit_test(test_epochs_deterministic),
      cmocka_unit_test(test_moving_statistics),
      cmocka_unit_test(test_inference_moving),
      cmocka_unit_test(test_model_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
