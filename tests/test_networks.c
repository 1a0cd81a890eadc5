/* Unit tests of networks as data: shape inference and its messages, the
 * limits, convolution and pooling against hand-computed values, numerical
 * gradients through every new layer, determinism across thread counts, and
 * model files (version 2 round trip, version 1 still loading). */
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

static uint64_t lcg = 777;
static float frand(void) { /* deterministic uniform in [-1, 1) */
  lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((lcg >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

#define CONV(f, k, s, pad, act)                                                               \
  {.type = NN_LAYER_CONV2D, .filters = (f), .kernel = (k), .stride = (s), .padding = (pad),     \
   .activation = (act)}
#define POOL(k, s) {.type = NN_LAYER_MAXPOOL, .kernel = (k), .stride = (s)}
#define FLAT {.type = NN_LAYER_FLATTEN}
#define DENSE(u) {.type = NN_LAYER_DENSE, .units = (u)}

static void expect_spec_error(const nn_layer_spec *s, uint32_t n, uint32_t batch, int code,
                              const char *msg) {
  nn_err err = {0};
  int rc = nn_spec_check(s, n, NN_INPUT_MNIST, NN_CLASSES, batch, 2, NULL, &err);
  if (rc != code || !strstr(err.msg, msg))
    fprintf(stderr, "got %d '%s', want %d '%s'\n", rc, err.msg, code, msg);
  assert_int_equal(rc, code);
  assert_non_null(strstr(err.msg, msg));
}

static void test_spec_errors(void **state) {
  (void)state;
  /* 28 -> conv 3/2 valid -> 13 -> pool 3 -> 4: a 5x5 kernel does not fit. */
  nn_layer_spec k5[] = {CONV(4, 3, 2, NN_PAD_VALID, NN_ACT_RELU), POOL(3, 0),
                        CONV(4, 5, 1, NN_PAD_VALID, NN_ACT_NONE), FLAT, DENSE(10)};
  expect_spec_error(k5, 5, 0, NN_EINVAL, "layers[2] conv2d: kernel 5 is larger than its 4x4 input");
  k5[2].padding = NN_PAD_SAME; /* "same" pads it instead */
  size_t np = 0;
  assert_int_equal(nn_spec_check(k5, 5, NN_INPUT_MNIST, 10, 128, 2, &np, NULL), 0);
  assert_int_equal(np, 4 * 9 + 4 + 4 * 25 * 4 + 4 + 4 * 4 * 4 * 10 + 10);

  nn_layer_spec last[] = {FLAT, DENSE(12)};
  expect_spec_error(last, 2, 0, NN_EINVAL, "layers[1] dense: 12 units, but the data set has 10 classes");
  nn_layer_spec stride[] = {CONV(4, 3, 3, NN_PAD_VALID, 0), FLAT, DENSE(10)};
  expect_spec_error(stride, 3, 0, NN_EINVAL, "layers[0] conv2d: stride must be 1 or 2");
  nn_layer_spec pool[] = {POOL(29, 0), FLAT, DENSE(10)};
  expect_spec_error(pool, 3, 0, NN_EINVAL, "layers[0] max_pool2d: size 29 is larger");
  nn_layer_spec flatpool[] = {FLAT, POOL(2, 0), DENSE(10)};
  expect_spec_error(flatpool, 3, 0, NN_EINVAL, "layers[1] max_pool2d: its input is a flat vector");
  nn_layer_spec rate[] = {{.type = NN_LAYER_DROPOUT, .rate = 1.5f}, DENSE(10)};
  expect_spec_error(rate, 2, 0, NN_EINVAL, "layers[0] dropout: rate");
  nn_layer_spec soft[] = {DENSE(10), {.type = NN_LAYER_SOFTMAX}};
  expect_spec_error(soft, 2, 0, NN_EINVAL, "layers[1] softmax");
  nn_layer_spec filters[] = {CONV(0, 3, 1, 0, 0), FLAT, DENSE(10)};
  expect_spec_error(filters, 3, 0, NN_EINVAL, "layers[0] conv2d: filters");
  expect_spec_error(filters, 0, 0, NN_EINVAL, "no layers");

  /* Limits: 65 layers; 51M parameters; the activation budget. */
  nn_layer_spec many[65];
  for (int i = 0; i < 64; i++) many[i] = (nn_layer_spec){.type = NN_LAYER_RELU};
  many[64] = (nn_layer_spec)DENSE(10);
  expect_spec_error(many, 65, 0, NN_ETOOBIG, "65 layers, more than the limit of 64");
  assert_int_equal(nn_spec_check(many + 1, 64, NN_INPUT_MNIST, 10, 128, 1, NULL, NULL), 0);
  nn_layer_spec big[] = {DENSE(65536), DENSE(10)};
  expect_spec_error(big, 2, 0, NN_ETOOBIG, "layers[0] dense: the network passes the limit of 50000000");
  const nn_layer_spec *cnn;
  uint32_t n;
  assert_int_equal(nn_preset_spec("cnn", &cnn, &n), 0);
  assert_int_equal(nn_spec_check(cnn, n, NN_INPUT_MNIST, 10, 128, 2, NULL, NULL), 0);
  expect_spec_error(cnn, n, 65536, NN_ETOOBIG, "MiB budget");
  nn_err err;
  assert_int_equal(nn_spec_check(cnn, n, NN_INPUT_MNIST, 9, 0, 1, NULL, &err), NN_EINVAL);
}

static void test_presets_as_specs(void **state) {
  (void)state;
  static const size_t want[] = {337418, 669706, 34826};
  for (uint32_t i = 0; i < 3; i++) {
    const char *name = nn_preset_name(i);
    assert_non_null(name);
    nn_model *m;
    assert_int_equal(nn_model_create_preset(&m, name), 0);
    assert_int_equal(m->n_params, want[i]);
    const nn_layer_spec *s;
    uint32_t n;
    assert_int_equal(nn_preset_spec(name, &s, &n), 0);
    assert_int_equal(m->n_specs, n);
    assert_memory_equal(m->specs, s, n * sizeof *s);
    nn_model_free(m);
  }
  assert_null(nn_preset_name(3));
  assert_string_equal(nn_preset_name(0), "antirectifier"); /* still the default */
  nn_model *m;
  assert_int_equal(nn_model_create_preset(&m, "cnn"), 0);
  /* Conv relu pool conv relu pool flatten dropout dense softmax. */
  assert_int_equal(m->n_layers, 10);
  assert_int_equal(m->layers[2].oshape.h, 13);
  assert_int_equal(m->layers[5].oshape.h, 5);
  assert_int_equal(m->layers[6].out, 1600);
  nn_model_free(m);
  nn_layer_type t;
  assert_int_equal(nn_layer_type_parse("max_pool2d", &t), 0);
  assert_int_equal(t, NN_LAYER_MAXPOOL);
  assert_string_equal(nn_layer_type_name(NN_LAYER_ANTIRECT), "antirectifier");
  assert_int_equal(nn_layer_type_parse("conv3d", &t), NN_EINVAL);
}

/* Runs the forward pass of a model on x and returns the workspace. */
static nn_workspace *run(const nn_model *m, const float *x, uint32_t n) {
  nn_workspace *ws;
  assert_int_equal(nn_workspace_create(&ws, m, n), 0);
  memcpy(ws->x, x, (size_t)n * m->n_inputs * sizeof(float));
  nn_forward(m, ws, n, 0, NULL);
  return ws;
}

static void test_conv_pool_hand(void **state) {
  (void)state;
  /* 3x3 input 1..9, a 2x2 kernel [1 2; 3 4] with bias 0.5, valid, stride 1:
   * out(0,0) = 1*1 + 2*2 + 4*3 + 5*4 + 0.5 = 37.5, then 47.5, 67.5, 77.5. */
  nn_layer_spec s[] = {CONV(1, 2, 1, NN_PAD_VALID, 0), FLAT, DENSE(10)};
  nn_model *m;
  assert_int_equal(nn_model_create_spec(&m, "t", (nn_shape){3, 3, 1}, s, 3, NULL), 0);
  float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  float *w = m->params + m->layers[0].w_off;
  w[0] = 1, w[1] = 2, w[2] = 3, w[3] = 4;
  m->params[m->layers[0].b_off] = 0.5f;
  nn_workspace *ws = run(m, x, 1);
  const float want[4] = {37.5f, 47.5f, 67.5f, 77.5f};
  for (int i = 0; i < 4; i++) assert_float_equal(ws->cur[0][i], want[i], 1e-5);
  nn_workspace_free(ws);
  nn_model_free(m);

  /* "same", stride 2 on 3x3: 2x2 outputs, TF pads one row/column at the
   * bottom/right only. Kernel of ones, two input channels (x, 10x). */
  nn_layer_spec s2[] = {CONV(2, 2, 2, NN_PAD_SAME, NN_ACT_RELU), FLAT, DENSE(10)};
  assert_int_equal(nn_model_create_spec(&m, "t", (nn_shape){3, 3, 2}, s2, 3, NULL), 0);
  assert_int_equal(m->layers[0].pad_t, 0);
  assert_int_equal(m->layers[0].oshape.w, 2);
  float x2[18];
  for (int i = 0; i < 9; i++) x2[2 * i] = (float)(i + 1), x2[2 * i + 1] = 10.f * (float)(i + 1);
  w = m->params + m->layers[0].w_off;
  for (int i = 0; i < 8; i++) w[i] = 1.f;     /* filter 0: sum of both channels */
  for (int i = 8; i < 16; i++) w[i] = -1.f;   /* filter 1: its negative, cut by relu */
  ws = run(m, x2, 1);
  /* Windows: (1,2,4,5) (3,6) (7,8) (9), times 11. */
  const float want2[8] = {132, 0, 99, 0, 165, 0, 99, 0};
  for (int i = 0; i < 8; i++) assert_float_equal(ws->cur[1][i], want2[i], 1e-4);
  nn_workspace_free(ws);
  nn_model_free(m);

  /* Valid, stride 2, 2x2 kernel of ones on 5x5 (1..25): two windows a side,
   * the last row and column unread. Two images, so the batch dimension is
   * crossed too. */
  nn_layer_spec s4[] = {CONV(1, 2, 2, NN_PAD_VALID, 0), FLAT, DENSE(10)};
  assert_int_equal(nn_model_create_spec(&m, "t", (nn_shape){5, 5, 1}, s4, 3, NULL), 0);
  assert_int_equal(m->layers[0].oshape.h, 2);
  float x4[50];
  for (int i = 0; i < 25; i++) x4[i] = (float)(i + 1), x4[25 + i] = -(float)(i + 1);
  w = m->params + m->layers[0].w_off;
  for (int i = 0; i < 4; i++) w[i] = 1.f;
  ws = run(m, x4, 2);
  const float want4[4] = {16, 24, 56, 64};
  for (int i = 0; i < 4; i++) {
    assert_float_equal(ws->cur[0][i], want4[i], 1e-5);
    assert_float_equal(ws->cur[0][4 + i], -want4[i], 1e-5);
  }
  nn_workspace_free(ws);
  nn_model_free(m);

  /* Max pooling 2 (stride 2) on 5x5, channels 1: the odd last row/column is
   * dropped; pool 3 stride 1 overlaps. */
  nn_layer_spec s3[] = {POOL(2, 0), FLAT, DENSE(10)};
  assert_int_equal(nn_model_create_spec(&m, "t", (nn_shape){5, 5, 1}, s3, 3, NULL), 0);
  float x3[25];
  for (int i = 0; i < 25; i++) x3[i] = (float)((i * 7) % 11);
  ws = run(m, x3, 1);
  /* rows 0-1: [0 7 3 10 6 / 2 9 5 1 8]; rows 2-3: [4 0 7 3 10 / 6 2 9 5 1] */
  const float want3[4] = {9, 10, 6, 9};
  for (int i = 0; i < 4; i++) assert_float_equal(ws->cur[0][i], want3[i], 0);
  nn_workspace_free(ws);
  nn_model_free(m);
}

/* Antirectifier on a feature map works per position across channels: the
 * same as the flat kernel on each position's channel vector. */
static void test_antirect_feature_map(void **state) {
  (void)state;
  nn_layer_spec s[] = {{.type = NN_LAYER_ANTIRECT}, FLAT, DENSE(10)};
  nn_model *m;
  assert_int_equal(nn_model_create_spec(&m, "t", (nn_shape){2, 3, 4}, s, 3, NULL), 0);
  assert_int_equal(m->layers[0].oshape.c, 8);
  float x[24], y[4], inv[1], out[8];
  for (int i = 0; i < 24; i++) x[i] = frand();
  nn_workspace *ws = run(m, x, 1);
  for (int p = 0; p < 6; p++) {
    nn_antirect_forward(x + 4 * p, 1, 4, y, inv, out);
    assert_memory_equal(ws->cur[0] + 8 * p, out, sizeof out);
  }
  nn_workspace_free(ws);
  nn_model_free(m);
}

/* A net with every new layer: stride 2 + same padding, antirectifier on a
 * feature map, an odd pooling (3, stride 2), channels > 1, a 1x1 output. */
static nn_model *conv_model(uint64_t seed) {
  nn_layer_spec s[] = {CONV(3, 3, 2, NN_PAD_SAME, NN_ACT_RELU), /* 14x14x3 */
                       {.type = NN_LAYER_ANTIRECT},             /* 14x14x6 */
                       CONV(4, 3, 1, NN_PAD_VALID, NN_ACT_NONE), /* 12x12x4 */
                       POOL(3, 2),                               /* 5x5x4 */
                       CONV(2, 2, 2, NN_PAD_SAME, NN_ACT_RELU),  /* 3x3x2 */
                       FLAT,
                       {.type = NN_LAYER_DROPOUT, .rate = 0.2f},
                       {.type = NN_LAYER_DENSE, .units = 7, .activation = NN_ACT_RELU},
                       DENSE(10)};
  nn_model *m;
  lcg = seed; /* the biases below depend on the seed only */
  assert_int_equal(nn_model_create_spec(&m, "convtest", NN_INPUT_MNIST, s, 9, NULL), 0);
  assert_int_equal(m->layers[4].oshape.h, 5); /* conv relu anti conv pool */
  assert_int_equal(m->layers[5].oshape.h, 3);
  nn_model_init(m, seed);
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    if (l->type == NN_LAYER_DENSE || l->type == NN_LAYER_CONV2D)
      for (uint32_t k = 0; k < l->oshape.c; k++) m->params[l->b_off + k] = 0.1f * frand();
  }
  return m;
}

/* The cnn preset's pattern at small sizes: conv + ReLU (run inside the
 * convolution's kernel) straight into a pooling (which then folds in the
 * ReLU's gradient) that leaves a row and a column out (25 -> 12), the same
 * again with a valid stride-2 convolution whose windows leave the last row
 * and column out (12 -> 5), dropout after the flatten. With 16 filters the
 * maps are in oneDNN's blocked layout up to the flatten, with 5 in NHWC. */
static uint32_t g_filters;
static float g_bias; /* added to the convolutions' biases */

static nn_model *conv_pool_model(uint64_t seed) {
  const uint32_t f = g_filters;
  nn_layer_spec s[] = {CONV(f, 4, 1, NN_PAD_VALID, NN_ACT_RELU), /* 25x25xf */
                       POOL(2, 0),                               /* 12x12xf */
                       CONV(f, 3, 2, NN_PAD_VALID, NN_ACT_RELU), /* 5x5xf */
                       POOL(2, 0),                               /* 2x2xf */
                       FLAT,
                       {.type = NN_LAYER_DROPOUT, .rate = 0.5f},
                       DENSE(10)};
  nn_model *m;
  lcg = seed;
  assert_int_equal(nn_model_create_spec(&m, "convpool", NN_INPUT_MNIST, s, 7, NULL), 0);
  assert_int_equal(m->layers[4].oshape.h, 5);
  assert_int_equal(m->layers[5].oshape.h, 2);
  nn_model_init(m, seed);
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    if (l->type == NN_LAYER_CONV2D)
      for (uint32_t k = 0; k < l->oshape.c; k++) m->params[l->b_off + k] = 0.1f * frand() + g_bias;
  }
  return m;
}

/* Checks every `step`-th parameter (all of them with step 1). */
static void check_gradient(nn_model *(*make)(uint64_t), size_t step) {
  enum { N = 3 };
  for (uint32_t threads = 1; threads <= 2; threads++) {
    nn_model *m = make(5);
    nn_trainer *t;
    nn_train_config cfg;
    nn_train_defaults(&cfg);
    cfg.batch_size = N;
    cfg.threads = threads;
    assert_int_equal(nn_trainer_create(&t, m, &cfg), 0);
    float *x = malloc(N * 784 * sizeof(float));
    uint8_t labels[N] = {1, 7, 4};
    for (int i = 0; i < N * 784; i++) x[i] = frand() > 0.5f ? (frand() + 1.0f) * 0.5f : 0.0f;
    const float *g;
    nn_trainer_gradient(t, x, labels, N, &g);
    float *ana = malloc(m->n_params * sizeof(float));
    memcpy(ana, g, m->n_params * sizeof(float));
    size_t checked = 0, bad = 0, kinked = 0;
    for (size_t i = 0; i < m->n_params; i += step) {
      /* Central differences at two step sizes: when they disagree, a kink
       * (relu, a max switching, the antirectifier's sign) lies within the
       * step and the estimate means nothing; such parameters are skipped, at
       * most a fifth. Everywhere else the analytic gradient must match. */
      const float save = m->params[i];
      double num[2], one_sided = 0, l0 = nn_trainer_gradient(t, x, labels, N, NULL);
      for (int k = 0; k < 2; k++) {
        const float h = k ? 5e-4f : 1e-3f;
        m->params[i] = save + h;
        double lp = nn_trainer_gradient(t, x, labels, N, NULL);
        m->params[i] = save - h;
        double lm = nn_trainer_gradient(t, x, labels, N, NULL);
        num[k] = (lp - lm) / (2.0 * h);
        /* A kink right at the point: the one-sided slopes disagree. */
        if (k) one_sided = fabs((lp - l0) - (l0 - lm)) / h;
      }
      m->params[i] = save;
      checked++;
      if (fabs(num[0] - num[1]) > 2e-4 + 0.01 * fabs(num[1]) ||
          one_sided > 1e-3 + 0.02 * fabs(num[1])) {
        kinked++;
        continue;
      }
      if (fabs(num[1] - ana[i]) > 5e-4 + 2e-2 * fabs(num[1])) {
        bad++;
        fprintf(stderr, "param %zu: numeric %g analytic %g\n", i, num[1], ana[i]);
      }
    }
    fprintf(stderr, "conv gradient check (%u threads): %zu parameters, %zu skipped at kinks\n",
            threads, checked, kinked);
    assert_true(checked == (m->n_params + step - 1) / step);
    assert_int_equal(bad, 0);
    assert_true(kinked * 5 <= checked);
    free(ana);
    free(x);
    nn_trainer_free(t);
    nn_model_free(m);
  }
}

static void test_conv_gradient(void **state) {
  (void)state;
  check_gradient(conv_model, 1);
  /* Negative biases: many pooling windows hold only clamped values, whose
   * gradient the ReLU must stop. */
  g_bias = -0.3f;
  g_filters = 5;
  check_gradient(conv_pool_model, 1);
  g_filters = 16; /* 3242 parameters: a sample (7 is prime to every layer's sizes) */
  check_gradient(conv_pool_model, 7);
}

/* A shard above 8 images runs each convolution with its pooling in pieces
 * of 8 (the first convolution forward and backward, core/model.c); 8 images
 * run whole. The gradient of 48 images (one thread: one shard) must be the
 * mean of its six 8-image batches', and the same with 2 shards of 32. */
static void test_conv_pieces_match_whole(void **state) {
  (void)state;
  enum { N = 48, P = 8 };
  g_filters = 16;
  g_bias = 0.f;
  float *x = malloc(N * 784 * sizeof(float));
  uint8_t labels[N];
  for (int i = 0; i < N * 784; i++) x[i] = frand() > 0.5f ? frand() : 0.0f;
  for (int i = 0; i < N; i++) labels[i] = (uint8_t)(i * 3 % 10);
  for (uint32_t threads = 1; threads <= 2; threads++) {
    const uint32_t n = threads == 1 ? N : 2 * 32; /* 2 x 32 reads 16 images past N */
    float *xs = calloc((size_t)n * 784, sizeof(float));
    uint8_t ls[64] = {0};
    memcpy(xs, x, (size_t)(n < N ? n : N) * 784 * sizeof(float));
    memcpy(ls, labels, n < N ? n : N);
    nn_model *m = conv_pool_model(9);
    nn_train_config cfg;
    nn_train_defaults(&cfg);
    cfg.batch_size = n;
    cfg.threads = threads;
    nn_trainer *t;
    assert_int_equal(nn_trainer_create(&t, m, &cfg), 0);
    const float *g;
    float whole = nn_trainer_gradient(t, xs, ls, n, &g);
    float *ref = malloc(m->n_params * sizeof(float));
    memcpy(ref, g, m->n_params * sizeof(float));
    float *sum = calloc(m->n_params, sizeof(float));
    double loss = 0;
    for (uint32_t b = 0; b < n; b += P) {
      loss += nn_trainer_gradient(t, xs + (size_t)b * 784, ls + b, P, &g) / (n / P);
      for (size_t i = 0; i < m->n_params; i++) sum[i] += g[i] / (float)(n / P);
    }
    assert_float_equal(whole, loss, 1e-5 * (1 + fabs(loss)));
    double maxabs = 0;
    for (size_t i = 0; i < m->n_params; i++) maxabs = fmax(maxabs, fabs(ref[i]));
    assert_true(maxabs > 1e-3); /* a gradient that is there to compare */
    for (size_t i = 0; i < m->n_params; i++)
      if (fabs(ref[i] - sum[i]) > 1e-5 + 1e-4 * fabs(ref[i]))
        fail_msg("param %zu: %u threads, whole %g, pieces %g", i, threads, ref[i], sum[i]);
    free(sum);
    free(ref);
    free(xs);
    nn_trainer_free(t);
    nn_model_free(m);
  }
  free(x);
}

static nn_dataset synth;

static void make_synth(uint32_t n) {
  synth.n = n;
  synth.rows = synth.cols = 28;
  synth.images = malloc((size_t)n * 784);
  synth.labels = malloc(n);
  for (uint32_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)(i * 7 % 10);
    synth.labels[i] = c;
    for (int p = 0; p < 784; p++) {
      int band = (p % 28) * 10 / 28; /* class = brightest column band */
      int v = (band == c ? 200 : 20) + (int)(frand() * 40);
      synth.images[(size_t)i * 784 + p] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
}

static nn_model *train_conv(nn_model *(*make)(uint64_t), uint32_t threads, uint64_t seed,
                            float *acc) {
  nn_model *m = make(seed);
  nn_train_config cfg;
  nn_train_defaults(&cfg);
  nn_opt_defaults(&cfg.opt, NN_OPT_ADAM);
  cfg.opt.lr = 0.01f;
  cfg.seed = seed;
  cfg.threads = threads;
  cfg.batch_size = 32;
  nn_trainer *t;
  assert_int_equal(nn_trainer_create(&t, m, &cfg), 0);
  for (int e = 0; e < 8; e++) assert_int_equal(nn_train_epoch(t, &synth, NULL, NULL, NULL, NULL), 0);
  nn_workspace *ws;
  assert_int_equal(nn_workspace_create(&ws, m, 64), 0);
  assert_int_equal(nn_evaluate(m, ws, &synth, NULL, acc, NULL), 0);
  nn_workspace_free(ws);
  nn_trainer_free(t);
  return m;
}

static void test_conv_determinism_and_learning(void **state) {
  (void)state;
  /* conv_model (im2col + GEMM and NHWC kernels), then the blocked layout
   * with pooling on blocks and the reorder at the flatten. */
  g_filters = 16;
  g_bias = 0.f;
  for (uint32_t run = 0; run < 5; run++) {
    uint32_t threads = run < 3 ? run + 1 : run - 2;
    nn_model *(*make)(uint64_t) = run < 3 ? conv_model : conv_pool_model;
    float acc_a, acc_b, acc_c;
    nn_model *a = train_conv(make, threads, 9, &acc_a), *b = train_conv(make, threads, 9, &acc_b);
    nn_model *c = train_conv(make, threads, 10, &acc_c);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    assert_memory_not_equal(a->params, c->params, a->n_params * sizeof(float));
    fprintf(stderr, "%s on the synthetic set, %u threads: accuracy %.3f\n", a->arch, threads,
            (double)acc_a);
    assert_true(acc_a > 0.6f); /* it learns: chance is 0.1 */
    nn_model_free(a), nn_model_free(b), nn_model_free(c);
  }
}

static char tmpdir[256];

static void test_model_file_v2_roundtrip(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/mnistd_net_XXXXXX");
  assert_non_null(mkdtemp(tmpdir));
  char path[512];
  snprintf(path, sizeof path, "%s/c.model", tmpdir);
  nn_model *m = conv_model(3), *l = NULL;
  nn_err err = {0};
  assert_int_equal(nn_model_save(m, path, &err), 0);
  assert_int_equal(nn_model_load(&l, path, &err), 0);
  assert_string_equal(l->arch, "convtest");
  assert_int_equal(l->n_specs, m->n_specs);
  assert_memory_equal(l->specs, m->specs, m->n_specs * sizeof *m->specs);
  assert_int_equal(l->n_layers, m->n_layers);
  assert_memory_equal(l->params, m->params, m->n_params * sizeof(float));
  uint8_t img[2 * 784];
  for (int i = 0; i < 2 * 784; i++) img[i] = (uint8_t)(i * 31 % 256);
  float pa[20], pb[20], p1[10];
  nn_workspace *wa, *wb;
  assert_int_equal(nn_workspace_create(&wa, m, 2), 0);
  assert_int_equal(nn_workspace_create(&wb, l, 2), 0);
  assert_int_equal(nn_predict_u8(m, wa, img, 2, pa), 0);
  assert_int_equal(nn_predict_u8(l, wb, img, 2, pb), 0);
  assert_memory_equal(pa, pb, sizeof pa);
  /* One image alone gives what it gets in a batch. */
  assert_int_equal(nn_predict_u8(l, wb, img + 784, 1, p1), 0);
  for (int i = 0; i < 10; i++) assert_float_equal(p1[i], pb[10 + i], 1e-6);
  nn_workspace_free(wa), nn_workspace_free(wb);
  nn_model_free(l);
  nn_model_free(m);
  unlink(path);
  rmdir(tmpdir);
}

/* tests/data/model_v1.mnistd was written by the version-1 build (main
 * before issue 12): Dense(8) ReLU Dropout(0.25) Dense(10) Softmax on 784
 * inputs. Its predictions on a fixed pattern were printed by that build. */
static void test_model_file_v1_loads(void **state) {
  (void)state;
  nn_model *m = NULL;
  nn_err err = {0};
  int rc = nn_model_load(&m, "tests/data/model_v1.mnistd", &err);
  if (rc) fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_int_equal(m->n_params, 784 * 8 + 8 + 8 * 10 + 10);
  assert_int_equal(m->n_specs, 4);
  assert_int_equal(m->specs[2].type, NN_LAYER_DROPOUT);
  assert_float_equal(m->specs[2].rate, 0.25f, 0);
  float x[784], p[10];
  for (int i = 0; i < 784; i++) x[i] = (float)(i % 17) / 16.f;
  nn_workspace *ws;
  assert_int_equal(nn_workspace_create(&ws, m, 1), 0);
  assert_int_equal(nn_predict_f32(m, ws, x, 1, p), 0);
  static const float want[10] = {0.0317605361f, 0.00179493323f, 0.0264511146f, 0.0283118393f,
                                 0.308346093f,  0.00174118357f, 0.312055171f,  0.0419918336f,
                                 0.246082753f,  0.00146458228f};
  for (int i = 0; i < 10; i++) assert_float_equal(p[i], want[i], 1e-6);
  nn_workspace_free(ws);
  nn_model_free(m);
}

/* Known transforms against hand-computed pixels. */
static void test_augment_hand(void **state) {
  (void)state;
  uint8_t src[784], dst[784];
  /* A ramp: pixel (x, y) = 8x + y, linear, so bilinear sampling is exact. */
  for (int y = 0; y < 28; y++)
    for (int x = 0; x < 28; x++) src[y * 28 + x] = (uint8_t)(8 * x + y);
  nn_augment_apply(src, dst, 1.f, 0.f, 0.f, 1.f); /* one pixel right */
  for (int y = 0; y < 28; y++) {
    assert_int_equal(dst[y * 28], 0); /* came from outside */
    for (int x = 1; x < 28; x++) assert_int_equal(dst[y * 28 + x], src[y * 28 + x - 1]);
  }
  nn_augment_apply(src, dst, 0.5f, 0.f, 0.f, 1.f); /* half a pixel: the mean, rounded */
  assert_int_equal(dst[3 * 28 + 5], 39); /* (8*4+3 + 8*5+3) / 2 = 39 */
  assert_int_equal(dst[0], 0);           /* 0.5 * 0 + 0.5 * outside 0 = 0 */
  nn_augment_apply(src, dst, 0.f, 0.f, 90.f, 1.f); /* quarter turn: (x,y) <- (y, 27-x) */
  for (int y = 0; y < 28; y++)
    for (int x = 0; x < 28; x++) assert_int_equal(dst[y * 28 + x], src[(27 - x) * 28 + y]);
  nn_augment_apply(src, dst, 0.f, 0.f, 0.f, 2.f); /* zoom x2 about (13.5, 13.5) */
  assert_int_equal(dst[0], 61);              /* at (6.75, 6.75): 8*6.75 + 6.75 = 60.75 */
  assert_int_equal(dst[27 * 28 + 27], 182);  /* at (20.25, 20.25): 182.25 */
  assert_int_equal(dst[13 * 28 + 14], 123);  /* at (13.75, 13.25): 110 + 13.25 */
}

static void test_augment_seeded(void **state) {
  (void)state;
  uint8_t src[784], a[784], b[784], c[784];
  for (int i = 0; i < 784; i++) src[i] = (uint8_t)((i * 37) % 256);
  nn_augment au = {2.f, 10.f, 0.1f};
  assert_true(nn_augment_valid(&au));
  nn_augment_random(&au, 42, src, a);
  nn_augment_random(&au, 42, src, b);
  nn_augment_random(&au, 43, src, c);
  assert_memory_equal(a, b, 784);
  assert_memory_not_equal(a, c, 784);
  nn_augment bad = {2.f, NAN, 0.1f};
  assert_false(nn_augment_valid(&bad));
  bad = (nn_augment){9.f, 0, 0};
  assert_false(nn_augment_valid(&bad));
  /* Training with augmentation: same seed, same weights. */
  nn_model *m[2];
  for (int k = 0; k < 2; k++) {
    m[k] = conv_model(4);
    nn_train_config cfg;
    nn_train_defaults(&cfg);
    nn_opt_defaults(&cfg.opt, NN_OPT_ADAM);
    cfg.threads = 2;
    cfg.batch_size = 32;
    cfg.augment = au;
    nn_trainer *t;
    assert_int_equal(nn_trainer_create(&t, m[k], &cfg), 0);
    assert_int_equal(nn_train_epoch(t, &synth, NULL, NULL, NULL, NULL), 0);
    nn_trainer_free(t);
  }
  assert_memory_equal(m[0]->params, m[1]->params, m[0]->n_params * sizeof(float));
  nn_model_free(m[0]), nn_model_free(m[1]);
}

int main(void) {
  make_synth(480);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spec_errors),
      cmocka_unit_test(test_presets_as_specs),
      cmocka_unit_test(test_conv_pool_hand),
      cmocka_unit_test(test_antirect_feature_map),
      cmocka_unit_test(test_conv_gradient),
      cmocka_unit_test(test_conv_pieces_match_whole),
      cmocka_unit_test(test_conv_determinism_and_learning),
      cmocka_unit_test(test_model_file_v2_roundtrip),
      cmocka_unit_test(test_model_file_v1_loads),
      cmocka_unit_test(test_augment_hand),
      cmocka_unit_test(test_augment_seeded),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  free(synth.images);
  free(synth.labels);
  return rc;
}
