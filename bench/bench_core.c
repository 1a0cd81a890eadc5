/* Benchmarks of the core on real MNIST: training epoch time, accuracy after
 * a number of epochs for several seeds, inference latency and throughput,
 * and the cost of the bare matrix products of one epoch. Prints
 * "key value" lines that bench/run.sh turns into the table of docs/benchmarks.md.
 *
 * usage: bench_core DATA_DIR MODE [args]
 *   train THREADS EPOCHS [ARCH]  time per epoch (best), val accuracy, and
 *                                whether the trainer chose the cross-core
 *                                hand-off (BENCH_HANDOFF=on|off forces it)
 *   seeds EPOCHS SEED...         final test accuracy for each seed
 *   infer [THREADS]              single-image median us, batch images/s
 *   gemm THREADS                 the GEMMs of one epoch, nothing else: the
 *                                trainer's products per step as it issues
 *                                them (same oneDNN kernels): forward and
 *                                input gradients of a 128/THREADS-row shard,
 *                                weight gradients of its share of output
 *                                rows over all shards; the first layer on
 *                                the inputs each batch of a shuffled epoch
 *                                keeps (as the trainer), and once more on
 *                                all 784 ("dense" keys)
 *   gemmteam THREADS             the same products the other way: one
 *                                call per product on the whole batch of 128
 *                                with an OpenMP team of THREADS (the
 *                                alternative the trainer does not take)
 *   peak THREADS                 best GFLOP/s of one large single GEMM
 *   backend                      oneDNN version, ISA and kernel */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn_internal.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process: on a shared machine, what the work cost
 * without the time other processes held the cores. */
static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void load(const char *dir, nn_dataset *train, nn_dataset *test) {
  nn_err err = {0};
  if (nn_dataset_load_dir(train, dir, NN_SPLIT_TRAIN, &err) ||
      nn_dataset_load_dir(test, dir, NN_SPLIT_TEST, &err)) {
    fprintf(stderr, "bench: %s\n", err.msg);
    exit(1);
  }
}

static uint32_t g_threads = 2;
static double g_best_cpu = 1e9; /* train: best epoch's CPU seconds per thread */
static int g_handoff = -1;       /* train: nn_trainer_handoff after the run */
static double g_best_gemm;     /* train: that epoch's seconds per thread in dense products */

/* The first layer's kept inputs for each batch of 128 of a shuffled epoch
 * (the trainer's rule: nn_input_runs on the batch's pixels), into k0[steps];
 * returns their mean over all steps, a dense one counting 784. */
static double kept_inputs(const nn_dataset *ds, uint32_t *k0, uint32_t steps) {
  uint32_t *order = malloc(ds->n * sizeof *order);
  if (!order) exit(1);
  uint64_t x = 1;
  for (uint32_t i = 0; i < ds->n; i++) order[i] = i;
  for (uint32_t i = ds->n - 1; i > 0; i--) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    uint32_t j = (uint32_t)((x >> 33) % (i + 1)), t = order[i];
    order[i] = order[j], order[j] = t;
  }
  static nn_cols c;
  uint8_t used[NN_IMAGE_SIZE];
  double sum = 0;
  for (uint32_t st = 0; st < steps; st++) {
    uint32_t off = st * 128 % ds->n, n = ds->n - off < 128 ? ds->n - off : 128;
    nn_k_u8_or_rows(used, ds->images, order + off, n, NN_IMAGE_SIZE);
    k0[st] = nn_input_runs(used, NN_IMAGE_SIZE, &c) ? c.k : 0;
    sum += k0[st] ? k0[st] : NN_IMAGE_SIZE;
  }
  free(order);
  return sum / steps;
}

/* FLOP of the matrix products of one training pass over `samples` images:
 * forward and weight gradient of every dense layer, input gradient of all
 * but the first. */
static double epoch_flop(const nn_model *m, double samples) {
  double f = 0;
  int first = 1;
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    if (l->type != NN_LAYER_DENSE) continue;
    f += 2.0 * l->in * l->out * (first ? 2 : 3);
    first = 0;
  }
  return f * samples;
}

/* One thread's share of the batch-inference run: every n-th batch of 1000. */
typedef struct infer_part {
  const nn_model *m;
  const nn_dataset *ds;
  nn_workspace *ws;
  uint32_t k, n;
} infer_part;

static void *infer_run(void *arg) {
  infer_part *p = arg;
  static _Thread_local float probs[1000 * NN_CLASSES];
  for (uint32_t off = p->k * 1000; off < p->ds->n; off += p->n * 1000) {
    uint32_t cnt = p->ds->n - off < 1000 ? p->ds->n - off : 1000;
    nn_predict_u8(p->m, p->ws, p->ds->images + (size_t)off * NN_IMAGE_SIZE, cnt, probs);
  }
  return NULL;
}

/* One thread's share of the GEMM-only epoch. */
typedef struct gemm_shard {
  const nn_model *m;
  uint32_t rows, steps, k, n_shards;
  struct gemm_shard *all;
  nn_dnn *d;
  const uint32_t *k0;   /* per step: the first layer's kept inputs (0: all), or NULL */
  float *x[NN_MAX_LAYERS], *y[NN_MAX_LAYERS], *g[NN_MAX_LAYERS], *dx[NN_MAX_LAYERS], *grad;
} gemm_shard;

static int gemm_shard_init(gemm_shard *s) {
  if (nn_dnn_create(&s->d) || nn_dnn_prepare(s->d, s->m, s->rows, 1)) return -1;
  nn_dnn_set_threads(s->d, 1);
  if (!(s->grad = calloc(s->m->n_params, sizeof(float)))) return -1;
  for (uint32_t i = 0; i < s->m->n_layers; i++) {
    const nn_layer *l = &s->m->layers[i];
    if (l->type != NN_LAYER_DENSE) continue;
    size_t in = (size_t)s->rows * l->in, out = (size_t)s->rows * l->out;
    s->x[i] = calloc(in, 4), s->dx[i] = calloc(in, 4);
    s->y[i] = calloc(out, 4), s->g[i] = calloc(out, 4);
    if (!s->x[i] || !s->dx[i] || !s->y[i] || !s->g[i]) return -1;
    for (size_t k = 0; k < in; k++) s->x[i][k] = (float)(k % 13) * 0.05f;
    for (size_t k = 0; k < out; k++) s->g[i][k] = (float)(k % 11) * 0.01f;
  }
  return 0;
}

static void gemm_shard_free(gemm_shard *s) {
  for (uint32_t i = 0; i < NN_MAX_LAYERS; i++)
    free(s->x[i]), free(s->dx[i]), free(s->y[i]), free(s->g[i]);
  free(s->grad);
  nn_dnn_free(s->d);
}

static void *gemm_run(void *arg) {
  gemm_shard *s = arg;
  const nn_model *m = s->m;
  for (uint32_t it = 0; it < s->steps; it++) {
    const uint32_t k0 = s->k0 ? s->k0[it] : 0;
    nn_layer c0 = m->layers[0];
    c0.in = k0;
    for (uint32_t i = 0; i < m->n_layers; i++) {
      const nn_layer *l = &m->layers[i];
      if (l->type != NN_LAYER_DENSE) continue;
      if (i == 0 && k0) /* packed weights: the same number of floats is there */
        nn_dnn_dense_fwd_var(s->d, &c0, s->x[i], s->rows, m->params + l->w_off,
                             m->params + l->b_off, s->y[i]);
      else
        nn_dnn_dense_fwd(s->d, i, l, s->x[i], s->rows, m->params + l->w_off,
                         m->params + l->b_off, s->y[i]);
    }
    for (int i = (int)m->n_layers - 1; i > 0; i--) {
      const nn_layer *l = &m->layers[i];
      if (l->type == NN_LAYER_DENSE)
        nn_dnn_dense_dx(s->d, (uint32_t)i, l, s->g[i], m->params + l->w_off, s->rows,
                        s->dx[i]);
    }
    /* As the trainer: this thread's output rows of every weight gradient,
     * over all shards' rows. */
    for (uint32_t i = 0; i < m->n_layers; i++) {
      const nn_layer *l = &m->layers[i];
      if (l->type != NN_LAYER_DENSE) continue;
      uint32_t lo = l->out * s->k / s->n_shards, hi = l->out * (s->k + 1) / s->n_shards;
      for (uint32_t j = 0; lo < hi && j < s->n_shards; j++) {
        if (i == 0 && k0)
          nn_dnn_dense_dw_rows_var(s->d, &c0, lo, hi, s->all[j].g[i], s->all[j].x[i], s->rows,
                                   j > 0, s->grad + l->w_off);
        else
          nn_dnn_dense_dw_rows(s->d, i, j, s->n_shards, l, lo, hi, s->all[j].g[i],
                               s->all[j].x[i], s->rows, j > 0, s->grad + l->w_off);
      }
    }
  }
  return NULL;
}

static void train_run(nn_dataset *train, nn_dataset *test, const char *arch, uint64_t seed,
                      int epochs, double *best_s, float *acc, float *vloss) {
  nn_model *m;
  nn_trainer *t;
  nn_workspace *ws;
  nn_train_config cfg;
  nn_train_defaults(&cfg);
  if (!strcmp(arch, "cnn")) nn_opt_defaults(&cfg.opt, NN_OPT_ADAM); /* as Keras' example */
  cfg.seed = seed;
  cfg.threads = g_threads;
  if (nn_model_create_preset(&m, arch) || nn_trainer_create(&t, m, &cfg) ||
      nn_workspace_create(&ws, m, 1000))
    exit(1);
  nn_model_init(m, seed);
  const char *ho = getenv("BENCH_HANDOFF");
  if (ho && *ho)
    nn_trainer_set_handoff(t, !strcmp(ho, "on") ? NN_HANDOFF_ON : !strcmp(ho, "off") ? NN_HANDOFF_OFF
                                                                                  : NN_HANDOFF_AUTO);
  *best_s = 1e9;
  for (int e = 0; e < epochs; e++) {
    nn_epoch_metrics mt;
    double c0 = cpu_s(), g0 = nn_trainer_gemm_seconds(t);
    if (nn_train_epoch(t, train, NULL, NULL, NULL, &mt)) exit(1);
    double c = (cpu_s() - c0) / g_threads;
    if (mt.seconds < *best_s) {
      *best_s = mt.seconds;
      /* The products' share of that epoch, timed inside the step. */
      g_best_gemm = (nn_trainer_gemm_seconds(t) - g0) / g_threads;
    }
    if (c < g_best_cpu) g_best_cpu = c;
  }
  nn_evaluate(m, ws, test, vloss, acc, NULL);
  g_handoff = nn_trainer_handoff(t);
  nn_workspace_free(ws);
  nn_trainer_free(t);
  nn_model_free(m);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: bench_core DATA_DIR train|seeds|infer|gemm ...\n");
    return 2;
  }
  const char *mode = argv[2];
  nn_dataset train = {0}, test = {0};
  if (!strcmp(mode, "train") && argc >= 5) {
    g_threads = (uint32_t)atoi(argv[3]);
    load(argv[1], &train, &test);
    double best;
    float acc, vl;
    train_run(&train, &test, argc > 5 ? argv[5] : "antirectifier", 1, atoi(argv[4]), &best,
              &acc, &vl);
    printf("epoch_seconds %.3f\nepoch_cpu_seconds_per_thread %.3f\nsamples_per_second "
           "%.0f\nval_accuracy %.4f\nepoch_gemm_seconds_per_thread %.3f\nhandoff %d\n",
           best, g_best_cpu, train.n / best, acc, g_best_gemm, g_handoff);
  } else if (!strcmp(mode, "seeds") && argc >= 5) {
    load(argv[1], &train, &test);
    for (int i = 4; i < argc; i++) {
      double best;
      float acc, vl;
      train_run(&train, &test, "antirectifier", strtoull(argv[i], 0, 10), atoi(argv[3]),
                &best, &acc, &vl);
      printf("seed_%s_accuracy %.4f\nseed_%s_val_loss %.4f\n", argv[i], acc, argv[i], vl);
      fflush(stdout);
    }
  } else if (!strcmp(mode, "infer1") && argc >= 4) {
    /* One image at a time through a preset (ARCH), single-threaded. */
    nn_set_threads(1);
    load(argv[1], &train, &test);
    nn_model *m;
    nn_workspace *ws1;
    if (nn_model_create_preset(&m, argv[3]) || nn_workspace_create(&ws1, m, 1)) return 1;
    nn_model_init(m, 1);
    if (nn_workspace_pin(ws1, m)) return 1;
    enum { N1 = 5000 };
    static double lat1[N1];
    float probs[NN_CLASSES];
    for (int i = 0; i < 500; i++)
      nn_predict_u8(m, ws1, test.images + (size_t)(i % test.n) * NN_IMAGE_SIZE, 1, probs);
    for (int i = 0; i < N1; i++) {
      double t0 = now_s();
      nn_predict_u8(m, ws1, test.images + (size_t)(i % test.n) * NN_IMAGE_SIZE, 1, probs);
      lat1[i] = now_s() - t0;
    }
    qsort(lat1, N1, sizeof *lat1, cmp_double);
    printf("infer_single_us_median %.2f\n", lat1[N1 / 2] * 1e6);
    nn_workspace_free(ws1);
    nn_model_free(m);
  } else if (!strcmp(mode, "infer")) {
    nn_set_threads(1);
    load(argv[1], &train, &test);
    nn_model *m;
    nn_workspace *ws1, *wsb;
    if (nn_model_create_preset(&m, "antirectifier") || nn_workspace_create(&ws1, m, 1) ||
        nn_workspace_create(&wsb, m, 1000))
      return 1;
    nn_model_init(m, 1);
    /* As the daemon's predictor threads do. */
    if (nn_workspace_pin(ws1, m)) return 1;
    enum { N = 20000 };
    static double lat[N];
    float probs[1000 * NN_CLASSES];
    for (int i = 0; i < 2000; i++)
      nn_predict_u8(m, ws1, test.images + (size_t)(i % test.n) * NN_IMAGE_SIZE, 1, probs);
    for (int i = 0; i < N; i++) {
      double t0 = now_s();
      nn_predict_u8(m, ws1, test.images + (size_t)(i % test.n) * NN_IMAGE_SIZE, 1, probs);
      lat[i] = now_s() - t0;
    }
    qsort(lat, N, sizeof *lat, cmp_double);
    printf("infer_single_us_median %.2f\ninfer_single_us_p99 %.2f\n", lat[N / 2] * 1e6,
           lat[N * 99 / 100] * 1e6);
    /* Batches of 1000 two ways: one call whose products use an OpenMP team
     * of THREADS, and THREADS threads each predicting its share of the
     * batches with single-threaded products (as the daemon's HTTP threads
     * do). */
    int T = argc > 3 ? atoi(argv[3]) : 2;
    if (T < 1 || T > 8) return 2;
    nn_set_threads(T);
    double best = 1e9, best_cpu = 1e9;
    for (int rep = 0; rep < 5; rep++) {
      double t0 = now_s(), c0 = cpu_s();
      for (uint32_t off = 0; off < test.n; off += 1000)
        nn_predict_u8(m, wsb, test.images + (size_t)off * NN_IMAGE_SIZE, 1000, probs);
      double s = now_s() - t0, c = cpu_s() - c0;
      if (s < best) best = s;
      if (c < best_cpu) best_cpu = c;
    }
    printf("infer_batch_images_per_second %.0f\ninfer_batch_images_per_cpu_second %.0f\n",
           test.n / best, test.n / best_cpu);
    nn_set_threads(1);
    infer_part parts[8];
    for (int k = 0; k < T; k++) {
      parts[k] = (infer_part){.m = m, .ds = &test, .k = (uint32_t)k, .n = (uint32_t)T};
      if (nn_workspace_create(&parts[k].ws, m, 1000)) return 1;
    }
    best = best_cpu = 1e9;
    for (int rep = 0; rep < 5; rep++) {
      pthread_t tid[8];
      double t0 = now_s(), c0 = cpu_s();
      for (int k = 1; k < T; k++) pthread_create(&tid[k], NULL, infer_run, &parts[k]);
      infer_run(&parts[0]);
      for (int k = 1; k < T; k++) pthread_join(tid[k], NULL);
      double s = now_s() - t0, c = cpu_s() - c0;
      if (s < best) best = s;
      if (c < best_cpu) best_cpu = c;
    }
    printf("infer_batch_threads_images_per_cpu_second %.0f\n", test.n / best_cpu);
    for (int k = 0; k < T; k++) nn_workspace_free(parts[k].ws);
    printf("infer_batch_threads_images_per_second %.0f\n", test.n / best);
    nn_workspace_free(wsb);
    nn_workspace_free(ws1);
    nn_model_free(m);
  } else if (!strcmp(mode, "gemm") && argc >= 4) {
    int T = atoi(argv[3]);
    if (T < 1 || T > 8) return 2;
    nn_model *m;
    if (nn_model_create_preset(&m, "antirectifier")) return 1;
    nn_model_init(m, 1);
    load(argv[1], &train, &test);
    static uint32_t k0[469];
    const double kept = kept_inputs(&train, k0, 469);
    gemm_shard sh[8];
    for (int k = 0; k < T; k++) {
      sh[k] = (gemm_shard){.m = m, .rows = 128 / T, .steps = 469, .k = (uint32_t)k,
                           .n_shards = (uint32_t)T, .all = sh};
      if (gemm_shard_init(&sh[k])) return 1;
    }
    /* Pass 0: the first layer on its kept inputs, as trained; 1: on all.
     * Alternated, so that a change of the host's speed hits both. */
    double best[2] = {1e9, 1e9}, best_cpu[2] = {1e9, 1e9};
    for (int rep = 0; rep < 5; rep++)
      for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < T; k++) sh[k].k0 = pass ? NULL : k0;
        pthread_t tid[8];
        double t0 = now_s(), c0 = cpu_s();
        for (int k = 1; k < T; k++) pthread_create(&tid[k], NULL, gemm_run, &sh[k]);
        gemm_run(&sh[0]);
        for (int k = 1; k < T; k++) pthread_join(tid[k], NULL);
        double t = now_s() - t0, c = (cpu_s() - c0) / T;
        if (t < best[pass]) best[pass] = t;
        if (c < best_cpu[pass]) best_cpu[pass] = c;
      }
    for (int pass = 0; pass < 2; pass++) {
      /* The first layer's two products scale with the inputs they read. */
      const nn_layer *l0 = &m->layers[0];
      double flop = epoch_flop(m, 469 * 128) -
                    (pass ? 0 : 4.0 * l0->out * (NN_IMAGE_SIZE - kept) * 469 * 128);
      const char *p = pass ? "gemm_dense_" : "gemm_";
      printf("%sepoch_cpu_seconds_per_thread %.3f\n", p, best_cpu[pass]);
      printf("%sepoch_seconds %.3f\n%sepoch_gflop %.1f\n%sgflops %.0f\n", p, best[pass], p,
             flop * 1e-9, p, flop * 1e-9 / best[pass]);
    }
    printf("first_layer_inputs_kept %.0f\n", kept);
    for (int k = 0; k < T; k++) gemm_shard_free(&sh[k]);
    nn_model_free(m);
  } else if (!strcmp(mode, "gemmteam") && argc >= 4) {
    /* The alternative: one call per product on the whole batch of 128
     * with an OpenMP team of THREADS, the whole weight gradient at once. */
    int T = atoi(argv[3]);
    nn_model *m;
    if (nn_model_create_preset(&m, "antirectifier")) return 1;
    nn_model_init(m, 1);
    gemm_shard s = {.m = m, .rows = 128, .steps = 469, .k = 0, .n_shards = 1};
    s.all = &s;
    if (gemm_shard_init(&s)) return 1;
    nn_dnn_set_threads(s.d, (uint32_t)T);
    double best = 1e9, best_cpu = 1e9;
    for (int rep = 0; rep < 5; rep++) {
      double t0 = now_s(), c0 = cpu_s();
      gemm_run(&s);
      double t = now_s() - t0, c = (cpu_s() - c0) / T;
      if (t < best) best = t;
      if (c < best_cpu) best_cpu = c;
    }
    printf("gemm_epoch_cpu_seconds_per_thread %.3f\ngemm_epoch_seconds %.3f\n", best_cpu, best);
    gemm_shard_free(&s);
    nn_model_free(m);
  } else if (!strcmp(mode, "peak") && argc >= 4) {
    /* One large product with a team of THREADS: what oneDNN can do on this
     * machine when nothing but arithmetic matters. */
    nn_set_threads(atoi(argv[3]));
    double best_gf = 0;
    int best_n = 0;
    for (int n = 256; n <= 2048; n *= 2) {
      nn_layer l = {.type = NN_LAYER_DENSE, .in = (uint32_t)n, .out = (uint32_t)n};
      float *a = calloc((size_t)n * n, 4), *w = calloc((size_t)n * n, 4),
            *b = calloc(n, 4), *y = calloc((size_t)n * n, 4);
      nn_dnn *d;
      if (!a || !w || !b || !y || nn_dnn_create(&d) || nn_dnn_prepare(d, NULL, 0, 1)) return 1;
      for (size_t i = 0; i < (size_t)n * n; i++) a[i] = w[i] = (float)(i % 7) * 0.1f;
      int reps = n <= 512 ? 200 : 2048 / n * 4;
      for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        for (int r = 0; r < reps; r++) nn_dnn_dense_fwd(d, 0, &l, a, (uint32_t)n, w, b, y);
        double gf = 2.0 * n * n * n * reps / (now_s() - t0) * 1e-9;
        if (gf > best_gf) best_gf = gf, best_n = n;
      }
      nn_dnn_free(d);
      free(a), free(w), free(b), free(y);
    }
    printf("peak_gflops %.0f\npeak_size %d\n", best_gf, best_n);
  } else if (!strcmp(mode, "backend")) {
    nn_backend_info bi;
    nn_backend_info_get(&bi);
    printf("library %s\nisa %s\nkernel %s\n", bi.library, bi.isa, bi.kernel);
  } else {
    fprintf(stderr, "bench_core: bad mode\n");
    return 2;
  }
  nn_dataset_free(&train);
  nn_dataset_free(&test);
  return 0;
}
