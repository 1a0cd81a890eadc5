/* Benchmarks of the core on real MNIST: training epoch time, accuracy after
 * a number of epochs for several seeds, inference latency and throughput,
 * and the cost of the bare matrix products of one epoch. Prints
 * "key value" lines that bench/run.sh turns into the README table.
 *
 * usage: bench_core DATA_DIR MODE [args]
 *   train THREADS EPOCHS [ARCH]  time per epoch (best), val accuracy
 *   seeds EPOCHS SEED...         final test accuracy for each seed
 *   infer [THREADS]              single-image median us, batch images/s
 *   gemm THREADS                 the GEMMs of one epoch, nothing else */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
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

static void train_run(nn_dataset *train, nn_dataset *test, const char *arch, uint64_t seed,
                      int epochs, double *best_s, float *acc, float *vloss) {
  nn_model *m;
  nn_trainer *t;
  nn_workspace *ws;
  nn_train_config cfg;
  nn_train_defaults(&cfg);
  cfg.seed = seed;
  cfg.threads = g_threads;
  if (nn_model_create_preset(&m, arch) || nn_trainer_create(&t, m, &cfg) ||
      nn_workspace_create(&ws, m, 1000))
    exit(1);
  nn_model_init(m, seed);
  *best_s = 1e9;
  for (int e = 0; e < epochs; e++) {
    nn_epoch_metrics mt;
    if (nn_train_epoch(t, train, NULL, NULL, NULL, &mt)) exit(1);
    if (mt.seconds < *best_s) *best_s = mt.seconds;
  }
  nn_evaluate(m, ws, test, vloss, acc, NULL);
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
    printf("epoch_seconds %.3f\nsamples_per_second %.0f\nval_accuracy %.4f\n", best,
           train.n / best, acc);
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
  } else if (!strcmp(mode, "infer")) {
    nn_set_threads(1);
    load(argv[1], &train, &test);
    nn_model *m;
    nn_workspace *ws1, *wsb;
    if (nn_model_create_preset(&m, "antirectifier") || nn_workspace_create(&ws1, m, 1) ||
        nn_workspace_create(&wsb, m, 1000))
      return 1;
    nn_model_init(m, 1);
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
    /* Batches use every core through BLAS; single images stay on one. */
    nn_set_threads(argc > 3 ? atoi(argv[3]) : 2);
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
      double t0 = now_s();
      for (uint32_t off = 0; off < test.n; off += 1000)
        nn_predict_u8(m, wsb, test.images + (size_t)off * NN_IMAGE_SIZE, 1000, probs);
      double s = now_s() - t0;
      if (s < best) best = s;
    }
    printf("infer_batch_images_per_second %.0f\n", test.n / best);
    nn_workspace_free(wsb);
    nn_workspace_free(ws1);
    nn_model_free(m);
  } else if (!strcmp(mode, "gemm") && argc >= 4) {
    /* The 8 products of one training step of the antirectifier network
     * (forward 3, weight gradients 3, input gradients 2), 469 times. */
    nn_set_threads(atoi(argv[3]));
    int B = 128, dims[4] = {784, 256, 256, 10}, ins[3] = {784, 512, 512};
    float *a = calloc((size_t)B * 1024, 4), *w = calloc(784 * 512, 4),
          *y = calloc((size_t)B * 1024, 4);
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
      double t0 = now_s();
      for (int s = 0; s < 469; s++)
        for (int l = 0; l < 3; l++) {
          int in = ins[l], out = dims[l + 1];
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, out, in, 1, a, in, w, in,
                      0, y, out);
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, B, 1, y, out, a, in,
                      0, w, in);
          if (l)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in, out, 1, y, out, w,
                        in, 0, a, in);
        }
      double t = now_s() - t0;
      if (t < best) best = t;
    }
    printf("gemm_epoch_seconds %.3f\n", best);
    free(a), free(w), free(y);
  } else {
    fprintf(stderr, "bench_core: bad mode\n");
    return 2;
  }
  nn_dataset_free(&train);
  nn_dataset_free(&test);
  return 0;
}
