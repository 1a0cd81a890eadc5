/* `mnistd train` and `mnistd predict`: translate flags to core calls and
 * print results. */
#include "srv_cli.h"
#include "srv_spec.h"
#include "srv_train.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nn.h"
#include "srv_datasets.h"
#include "srv_image.h"
#include "srv_store.h"

static int usage_error(srv_err *err, const char *fmt, const char *arg) {
  srv_err_printf(err, fmt, arg);
  return SRV_EUSAGE;
}

static const char TRAIN_HELP[] =
    "usage: mnistd train [options]\n"
    "Trains a network and prints one line per epoch (Keras style).\n"
    "  --arch antirectifier|relu|cnn  network (default antirectifier)\n"
    "  --layers FILE               network from a JSON layer spec: {\"layers\":[...]}\n"
    "  --augment SPEC              e.g. shift=2,rotate=10,scale=0.1 (random per image)\n"
    "  --dataset NAME              mnist or fashion-mnist (default mnist), or with\n"
    "                              --state-dir the name of a set uploaded to that daemon\n"
    "  --data-dir DIR              folder holding mnist/ and fashion-mnist/ (default data,\n"
    "                              or $MNISTD_DATA_DIR)\n"
    "  --state-dir DIR             a daemon's state directory: its uploaded data sets\n"
    "                              (POST /v1/datasets) are read from there, read-only\n"
    "  --epochs N                  (default 4)\n"
    "  --batch-size N              (default 128)\n"
    "  --optimizer rmsprop|sgd|adam (default rmsprop)\n"
    "  --lr X                      learning rate (default 0.001; sgd 0.01)\n"
    "  --seed N                    shuffling, dropout and initialisation (default 1)\n"
    "  --threads N                 training threads (default: one per core, up to 8)\n"
    "  --train-limit N             use only the first N training images\n"
    "  --test-limit N              evaluate on only the first N test images\n"
    "  --out FILE                  save the trained model (atomically)\n"
    "  --json                      one JSON object per epoch instead of the log\n";

struct progress_ctx { int tty; };

static int on_progress(const nn_progress *p, void *user) {
  struct progress_ctx *c = user;
  if (c->tty && (p->batch % 20 == 0 || p->batch == p->batches))
    fprintf(stderr, "\r%u/%u - loss: %.4f - accuracy: %.4f ", p->batch, p->batches,
            p->loss, p->accuracy);
  return 0;
}

static volatile sig_atomic_t g_interrupted; /* set by SIGINT only */
static volatile int g_cancel;
static void on_sigint(int sig) {
  (void)sig;
  g_interrupted = 1;
  g_cancel = 1;
}

/* mnistd train's choices, defaults filled in. */
typedef struct train_opts {
  const char *arch, *dataset, *out_path, *data_dir, *layers_path, *state_dir;
  nn_augment augment;
  long epochs, batch, seed, threads, train_limit, test_limit;
  double lr;
  int json;
  nn_opt_kind opt;
} train_opts;

/* Parses mnistd train's command line into *o: 0 to go on, 1 when --help
 * was printed, or SRV_EUSAGE after the message. */
static int train_parse(int argc, char **argv, train_opts *o, srv_err *err) {
  *o = (train_opts){"antirectifier", "mnist", NULL,
                    getenv("MNISTD_DATA_DIR") ? getenv("MNISTD_DATA_DIR") : "data", NULL, NULL,
                    {0, 0, 0}, 4, 128, 1, 0, 0, 0, 0, 0, NN_OPT_RMSPROP};
  char amsg[256];
  static const struct option opts[] = {
      {"arch", required_argument, 0, 'a'},      {"dataset", required_argument, 0, 'd'},
      {"data-dir", required_argument, 0, 'D'},  {"epochs", required_argument, 0, 'e'},
      {"batch-size", required_argument, 0, 'b'}, {"lr", required_argument, 0, 'l'},
      {"optimizer", required_argument, 0, 'o'}, {"seed", required_argument, 0, 's'},
      {"threads", required_argument, 0, 't'},   {"out", required_argument, 0, 'O'},
      {"json", no_argument, 0, 'j'},            {"train-limit", required_argument, 0, 'L'},
      {"test-limit", required_argument, 0, 'T'}, {"help", no_argument, 0, 'h'},
      {"layers", required_argument, 0, 'Y'},    {"augment", required_argument, 0, 'A'},
      {"state-dir", required_argument, 0, 'S'}, {0, 0, 0, 0}};
  int c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'a':
      if (strcmp(optarg, "antirectifier") && strcmp(optarg, "relu") && strcmp(optarg, "cnn"))
        return usage_error(err, "--arch must be antirectifier, relu or cnn, not '%s'",
                           optarg);
      o->arch = optarg;
      break;
    case 'd':
      if (!srv_dataset_is_builtin(optarg) && !srv_dataset_name_ok(optarg))
        return usage_error(err, "--dataset must be mnist, fashion-mnist or the name of an uploaded "
                           "set ([a-z0-9][a-z0-9._-]{0,63}), not '%s'", optarg);
      o->dataset = optarg;
      break;
    case 'D': o->data_dir = optarg; break;
    case 'S': o->state_dir = optarg; break;
    case 'e':
      if (srv_parse_long(optarg, 1, 1000, &o->epochs))
        return usage_error(err, "--epochs must be an integer in 1..1000, not '%s'", optarg);
      break;
    case 'b':
      if (srv_parse_long(optarg, 1, 65536, &o->batch))
        return usage_error(err, "--batch-size must be an integer in 1..65536, not '%s'",
                           optarg);
      break;
    case 'l':
      if (srv_parse_float(optarg, 0, 10, &o->lr))
        return usage_error(err, "--lr must be a number in (0, 10], not '%s'", optarg);
      break;
    case 'o':
      if (nn_opt_parse(optarg, &o->opt))
        return usage_error(err, "--optimizer must be rmsprop, sgd or adam, not '%s'",
                           optarg);
      break;
    case 's':
      if (srv_parse_long(optarg, 0, LONG_MAX, &o->seed))
        return usage_error(err, "--seed must be a non-negative integer, not '%s'", optarg);
      break;
    case 't':
      if (srv_parse_long(optarg, 1, NN_MAX_THREADS, &o->threads))
        return usage_error(err, "--threads must be an integer in 1..64, not '%s'", optarg);
      break;
    case 'L':
      if (srv_parse_long(optarg, 1, 100000000, &o->train_limit))
        return usage_error(err, "--train-limit must be a positive integer, not '%s'",
                           optarg);
      break;
    case 'T':
      if (srv_parse_long(optarg, 1, 100000000, &o->test_limit))
        return usage_error(err, "--test-limit must be a positive integer, not '%s'",
                           optarg);
      break;
    case 'O': o->out_path = optarg; break;
    case 'Y': o->layers_path = optarg; break;
    case 'A':
      if (srv_augment_parse_text(optarg, &o->augment, amsg, sizeof amsg))
        return usage_error(err, "%s", amsg);
      break;
    case 'j': o->json = 1; break;
    case 'h': fputs(TRAIN_HELP, stdout); return 1;
    case ':':
      return usage_error(err, "option '%s' needs a value", argv[optind - 1]);
    default:
      return usage_error(err, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return usage_error(err, "unexpected argument '%s'", argv[optind]);
  if (!srv_dataset_is_builtin(o->dataset) && !o->state_dir)
    return usage_error(err, "--dataset %s is not built in (mnist, fashion-mnist): to train on a "
                       "set uploaded to a daemon, give its --state-dir DIR", o->dataset);
  return 0;
}

/* mnistd train's epochs: trains, evaluates and prints each (Keras-style
 * text, or the shared JSON record). 0, or a negative errno with the
 * message in err (-EINTR: interrupted). */
static int train_loop(nn_model *m, nn_trainer *t, nn_workspace *ews, const nn_dataset *train,
                      const nn_dataset *test, long epochs, int json, srv_err *err) {
  const uint32_t batches = (train->n + nn_trainer_config(t)->batch_size - 1) /
                           nn_trainer_config(t)->batch_size;
  int rc;
  struct sigaction sa = {.sa_handler = on_sigint};
  sigaction(SIGINT, &sa, NULL);
  struct progress_ctx pc = {.tty = !json && isatty(STDERR_FILENO)};
  for (long e = 1; e <= epochs; e++) {
    nn_epoch_metrics mt;
    if (!json) printf("Epoch %ld/%ld\n", e, epochs), fflush(stdout);
    rc = nn_train_epoch(t, train, on_progress, &pc, &g_cancel, &mt);
    if (rc) {
      if (pc.tty) fputc('\n', stderr);
      srv_err_printf(err, "%s",
              g_interrupted ? "interrupted" : nn_strerror(rc));
      return g_interrupted ? -EINTR : rc;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if ((rc = nn_evaluate(m, ews, test, &mt.val_loss, &mt.val_accuracy, NULL))) {
      srv_err_printf(err, "evaluation failed: %s", nn_strerror(rc));
      return rc;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    mt.eval_seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (pc.tty) fputs("\r\033[K", stderr);
    char line[512];
    if (json && srv_epoch_json(&mt, line, sizeof line) >= 0)
      printf("%s\n", line);
    else if (!json)
      printf("%u/%u - %.2fs - loss: %.4f - accuracy: %.4f - val_loss: %.4f - "
             "val_accuracy: %.4f - %.0f samples/s\n",
             batches, batches, mt.seconds, (double)mt.loss,
             (double)mt.accuracy, (double)mt.val_loss, (double)mt.val_accuracy,
             mt.samples_per_second);
    fflush(stdout);
  }
  return 0;
}

/* --layers FILE: a JSON spec, checked as the daemon checks a job's. */
static int load_layers(nn_model **m, const char *path, uint32_t batch, uint32_t classes,
                       srv_err *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    int rc = -errno;
    srv_err_printf(err, "%s: %s", path, strerror(-rc));
    return rc;
  }
  char *buf = malloc(65537);
  size_t n = buf ? fread(buf, 1, 65537, f) : 0;
  fclose(f);
  if (!buf || n > 65536) {
    free(buf);
    srv_err_printf(err, "%s: not a layer spec (more than 64 KiB)", path);
    return -EINVAL;
  }
  nn_layer_spec spec[NN_MAX_SPECS];
  uint32_t ns;
  char msg[512];
  int rc = srv_spec_parse_text(buf, n, batch, classes, spec, &ns, msg, sizeof msg);
  free(buf);
  if (rc) {
    srv_err_printf(err, "%s: %s", path, msg);
    return rc;
  }
  /* An uploaded set (classes > 0): one output per class, as the daemon's
   * jobs do. */
  if (classes && spec[ns - 1].type == NN_LAYER_DENSE) spec[ns - 1].units = classes;
  nn_err nerr;
  if ((rc = nn_model_create_spec(m, "custom", NN_INPUT_MNIST, spec, ns, &nerr)))
    srv_err_printf(err, "%s: %s", path, nerr.msg);
  return rc;
}

/* --state-dir DIR --dataset NAME: an uploaded set of that daemon, read
 * beside it without changing anything (srv_store_open_readonly,
 * srv_datasets_open_readonly); the file's checksum is checked against its
 * record. *classes receives its class count. 0, or a negative errno with
 * the message in err. */
static int load_uploaded(const char *state, const char *name, nn_dataset *train,
                         nn_dataset *test, uint32_t *classes, srv_err *err) {
  char db[PATH_MAX + 16], msg[700] = "", sha[65];
  snprintf(db, sizeof db, "%s/mnistd.db", state);
  srv_store *st = NULL;
  srv_datasets *d = NULL;
  int rc;
  /* The records are read once, here; a daemon that started and folded its
   * log into the file during that read (a moment) makes us read again. */
  for (int tries = 0;; tries++) {
    if ((rc = srv_store_open_readonly(&st, state, msg, sizeof msg))) {
      srv_err_printf(err, "%s", msg[0] ? msg : strerror(-rc));
      return rc;
    }
    if ((rc = srv_datasets_open_readonly(&d, st, state))) {
      srv_err_printf(err, "%s: %s", db, rc == -ENOMEM ? "out of memory" : srv_store_errmsg(st));
      goto out;
    }
    if (tries == 2 || !srv_store_readonly_changed(st, state)) break;
    srv_datasets_close(d);
    srv_store_close(st);
    d = NULL;
    st = NULL;
  }
  if (srv_datasets_count(d, name, NULL, NULL, classes)) {
    cJSON *arr = cJSON_CreateArray();
    char have[400] = "";
    srv_datasets_list(d, arr);
    for (int i = 0, n = cJSON_GetArraySize(arr); i < n; i++) {
      const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, i), "name"));
      size_t l = strlen(have);
      snprintf(have + l, sizeof have - l, "%s%s", l ? ", " : "", s ? s : "");
    }
    cJSON_Delete(arr);
    srv_err_printf(err, "data set %s not found in %s (uploaded there: %s; built in: mnist, "
                   "fashion-mnist)", name, state, have[0] ? have : "none");
    rc = -ENOENT;
    goto out;
  }
  if ((rc = srv_datasets_load(d, name, NN_SPLIT_TRAIN, train, sha, msg, sizeof msg)) ||
      (rc = srv_datasets_load(d, name, NN_SPLIT_TEST, test, sha, msg, sizeof msg)))
    srv_err_printf(err, "%s", msg[0] ? msg : strerror(-rc));
out:
  srv_datasets_close(d);
  srv_store_close(st);
  return rc;
}

int srv_cli_train(int argc, char **argv, srv_err *err) {
  train_opts o;
  int st = train_parse(argc, argv, &o, err);
  if (st) return st == 1 ? 0 : st;
  const char *arch = o.arch, *dataset = o.dataset, *out_path = o.out_path,
             *data_dir = o.data_dir;
  long epochs = o.epochs, threads = o.threads;
  int json = o.json;

  char dir[PATH_MAX];
  int builtin = srv_dataset_is_builtin(dataset);
  if (builtin && srv_dataset_dir(data_dir, dataset, dir, sizeof dir)) {
    srv_err_printf(err, "no %s data under '%s' (run 'make data')", dataset, data_dir);
    return -ENOENT;
  }
  if (!threads) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    threads = cpus < 1 ? 1 : cpus > 8 ? 8 : cpus;
  }

  int rc;
  nn_err nerr = {0};
  nn_dataset train = {0}, test = {0};
  nn_model *m = NULL;
  nn_trainer *t = NULL;
  nn_workspace *ews = NULL;
  uint32_t classes = NN_CLASSES;
  if (!builtin) {
    if ((rc = load_uploaded(o.state_dir, dataset, &train, &test, &classes, err))) goto done;
  } else if ((rc = nn_dataset_load_dir(&train, dir, NN_SPLIT_TRAIN, &nerr)) ||
             (rc = nn_dataset_load_dir(&test, dir, NN_SPLIT_TEST, &nerr))) {
    srv_err_printf(err, "%s", nerr.msg);
    goto done;
  }
  if (o.train_limit) nn_dataset_truncate(&train, (uint32_t)o.train_limit);
  if (o.test_limit) nn_dataset_truncate(&test, (uint32_t)o.test_limit);

  nn_train_config cfg;
  srv_train_config(&cfg, o.opt, (float)o.lr, -1, (uint32_t)o.batch, (uint64_t)o.seed,
                   (uint32_t)threads);
  cfg.augment = o.augment;
  if (o.layers_path &&
      (rc = load_layers(&m, o.layers_path, cfg.batch_size, builtin ? 0 : classes, err)))
    goto done;
  if (o.layers_path) arch = "custom";
  if ((!m && (rc = builtin ? nn_model_create_preset(&m, arch)
                           : nn_model_create_preset_classes(&m, arch, classes))) || (rc = nn_trainer_create(&t, m, &cfg)) ||
      (rc = nn_workspace_create(&ews, m, 1000))) {
    srv_err_printf(err, "cannot create the model: %s", nn_strerror(rc));
    goto done;
  }
  nn_model_init(m, cfg.seed);
  if (!json)
    printf("%s on %s: %zu parameters, %u train / %u test images%s, batch %u, %s lr %g\n", arch,
           dataset, m->n_params, train.n, test.n, builtin ? "" : " (uploaded set)",
           cfg.batch_size, nn_opt_name(o.opt), (double)cfg.opt.lr);

  if ((rc = train_loop(m, t, ews, &train, &test, epochs, json, err))) goto done;
  if (out_path) {
    if ((rc = nn_model_save(m, out_path, &nerr))) {
      srv_err_printf(err, "%s", nerr.msg);
      goto done;
    }
    if (!json) printf("saved %s\n", out_path);
  }
done:
  nn_workspace_free(ews);
  nn_trainer_free(t);
  nn_model_free(m);
  nn_dataset_free(&test);
  nn_dataset_free(&train);
  return rc;
}

static const char PREDICT_HELP[] =
    "usage: mnistd predict --model FILE [--json] [--limit N] [--labels FILE] IMAGE...\n"
    "Prints the digit and the ten probabilities for every image in each IMAGE file:\n"
    "an IDX image file (plain or .gz, e.g. t10k-images-idx3-ubyte), raw bytes\n"
    "(N x 784, MNIST style: 0 = background, 255 = ink), or one PNG or PGM picture of\n"
    "any size (preprocessed the way MNIST was made: inverted if light, cropped,\n"
    "scaled to 20x20, centred by mass).\n"
    "  --model FILE     model written by 'mnistd train --out' or the daemon\n"
    "  --limit N        at most N images per file\n"
    "  --labels FILE    IDX labels for the (single) image file: also print accuracy\n"
    "  --json           one JSON object per image\n";

/* Loads every image of one input file: IDX when the magic says so, raw
 * 784-byte records otherwise. 0, or a negative errno with msg set. */
static int load_images(const char *path, uint8_t **px, uint32_t *n, char *msg, size_t len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    int rc = -errno;
    snprintf(msg, len, "%s: %s", path, strerror(-rc));
    return rc;
  }
  uint8_t head[4] = {0};
  size_t got = fread(head, 1, 4, f);
  int gz = got >= 2 && head[0] == 0x1f && head[1] == 0x8b;
  int idx = got == 4 && head[0] == 0 && head[1] == 0 && head[2] == 8 && head[3] == 3;
  if (gz || idx) {
    fclose(f);
    uint32_t rows, cols;
    nn_err nerr = {0};
    int rc = nn_idx_read_images(path, px, n, &rows, &cols, &nerr);
    if (rc) {
      snprintf(msg, len, "%s", nerr.msg);
      return rc;
    }
    if (rows != NN_IMAGE_SIDE || cols != NN_IMAGE_SIDE) {
      snprintf(msg, len, "%s: images are %ux%u, expected 28x28", path, rows, cols);
      free(*px);
      *px = NULL;
      return -EINVAL;
    }
    return 0;
  }
  struct stat st;
  int is_picture = got >= 2 && ((head[0] == 0x89 && head[1] == 'P') ||
                                (head[0] == 'P' && (head[1] == '5' || head[1] == '2')));
  if (is_picture && fstat(fileno(f), &st) == 0 && st.st_size > 0 &&
      st.st_size <= (64 << 20)) {
    /* A PNG or PGM picture: decode and preprocess like the daemon does. */
    uint8_t *buf = malloc((size_t)st.st_size);
    rewind(f);
    int ok = buf && fread(buf, 1, (size_t)st.st_size, f) == (size_t)st.st_size;
    fclose(f);
    *px = malloc(NN_IMAGE_SIZE);
    int empty = 0;
    char why[256] = "read failed";
    if (!ok || !*px ||
        srv_image_from_bytes(NULL, buf, (size_t)st.st_size, *px, &empty, why, sizeof why) < 0) {
      int rc = ok && *px ? -EINVAL : -EIO;
      snprintf(msg, len, "%.200s: %s", path, why);
      free(buf);
      free(*px);
      *px = NULL;
      return rc;
    }
    free(buf);
    *n = 1;
    return 0;
  }
  if (fstat(fileno(f), &st) < 0 || st.st_size <= 0 || st.st_size % NN_IMAGE_SIZE ||
      st.st_size > (off_t)NN_IDX_MAX_BYTES) {
    snprintf(msg, len,
             "%s: not an IDX image file, and its size is not a multiple of 784 bytes "
             "(raw 28x28 images)", path);
    fclose(f);
    return -EINVAL;
  }
  *n = (uint32_t)(st.st_size / NN_IMAGE_SIZE);
  *px = malloc((size_t)st.st_size);
  rewind(f);
  if (!*px || fread(*px, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
    snprintf(msg, len, "%s: read failed", path);
    free(*px);
    *px = NULL;
    fclose(f);
    return -EIO;
  }
  fclose(f);
  return 0;
}

/* mnistd predict on one IMAGE file: prints each image's class and
 * probabilities, and counts the ones matching labels (if any). 0, or a
 * negative errno with the message in err. */
static int predict_file(const nn_model *m, nn_workspace *ws, const char *path, uint32_t limit,
                        const char *labels_path, const uint8_t *labels, uint32_t n_labels,
                        int json, uint32_t *correct, uint32_t *total, srv_err *err) {
  uint8_t *px = NULL;
  uint32_t n = 0;
  char msg[512];
  int rc = load_images(path, &px, &n, msg, sizeof msg);
  if (rc) {
    srv_err_printf(err, "%s", msg);
    return rc;
  }
  if (limit && n > limit) n = limit;
  if (labels && n_labels < n) {
    srv_err_printf(err, "%s has %u labels for %u images", labels_path, n_labels, n);
    free(px);
    return -EINVAL;
  }
  /* One probability per class of the model (an uploaded set may have up
   * to 256): too large for the stack. */
  const uint32_t K = nn_model_classes(m);
  float *probs = malloc((size_t)256 * K * sizeof *probs);
  if (!probs) {
    free(px);
    srv_err_printf(err, "out of memory");
    return -ENOMEM;
  }
  for (uint32_t off = 0; off < n && !rc; off += 256) {
    uint32_t k = n - off < 256 ? n - off : 256;
    if ((rc = nn_predict_u8(m, ws, px + (size_t)off * NN_IMAGE_SIZE, k, probs))) {
      srv_err_printf(err, "%s: %s", path, nn_strerror(rc));
      break;
    }
    for (uint32_t i = 0; i < k; i++) {
      const float *p = probs + (size_t)i * K;
      int d = nn_argmax_n(p, K);
      if (labels) *correct += labels[off + i] == d;
      (*total)++;
      if (json) {
        printf("{\"file\":\"%s\",\"index\":%u,\"label\":%d,\"confidence\":%.6f,"
               "\"probabilities\":[", path, off + i, d, (double)p[d]);
        for (uint32_t j = 0; j < K; j++) printf("%s%.6f", j ? "," : "", (double)p[j]);
        printf("]}\n");
      } else {
        printf("%s[%u]: %d (%.3f)  ", path, off + i, d, (double)p[d]);
        for (uint32_t j = 0; j < K; j++) printf(" %u:%.3f", j, (double)p[j]);
        putchar('\n');
      }
    }
  }
  free(probs);
  free(px);
  return rc;
}

int srv_cli_predict(int argc, char **argv, srv_err *err) {
  static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                       {"json", no_argument, 0, 'j'},
                                       {"limit", required_argument, 0, 'n'},
                                       {"labels", required_argument, 0, 'L'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *model_path = NULL, *labels_path = NULL;
  long limit = 0;
  int json = 0, c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'm': model_path = optarg; break;
    case 'j': json = 1; break;
    case 'L': labels_path = optarg; break;
    case 'n':
      if (srv_parse_long(optarg, 1, 100000000, &limit))
        return usage_error(err, "--limit must be a positive integer, not '%s'", optarg);
      break;
    case 'h': fputs(PREDICT_HELP, stdout); return 0;
    case ':': return usage_error(err, "option '%s' needs a value", argv[optind - 1]);
    default: return usage_error(err, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (!model_path) return usage_error(err, "%s", "--model FILE is required");
  if (optind >= argc) return usage_error(err, "%s", "no IMAGE file given");
  if (labels_path && argc - optind != 1)
    return usage_error(err, "%s", "--labels needs exactly one IMAGE file");

  nn_err nerr = {0};
  nn_model *m = NULL;
  nn_workspace *ws = NULL;
  uint8_t *labels = NULL;
  uint32_t n_labels = 0, correct = 0, total = 0;
  int rc;
  if ((rc = nn_model_load(&m, model_path, &nerr))) {
    srv_err_printf(err, "%s", nerr.msg);
    return rc;
  }
  if ((rc = nn_workspace_create(&ws, m, 256))) {
    srv_err_printf(err, "%s", nn_strerror(rc));
    goto done;
  }
  if (labels_path && (rc = nn_idx_read_labels(labels_path, &labels, &n_labels, &nerr))) {
    srv_err_printf(err, "%s", nerr.msg);
    goto done;
  }
  for (int a = optind; a < argc && !rc; a++)
    rc = predict_file(m, ws, argv[a], (uint32_t)limit, labels_path, labels, n_labels, json, &correct,
                      &total, err);
  if (rc) goto done;
  if (labels) {
    if (json)
      printf("{\"accuracy\":%.6f,\"correct\":%u,\"total\":%u}\n",
             total ? (double)correct / total : 0.0, correct, total);
    else
      printf("accuracy: %.4f (%u/%u)\n", total ? (double)correct / total : 0.0, correct, total);
  }
done:
  free(labels);
  nn_workspace_free(ws);
  nn_model_free(m);
  return rc;
}
