/* `mnistd export`: writes a model as ONNX (srv_onnx.h), from a model file
 * or from a daemon's state directory (then with its records: data set,
 * test accuracy, training job configuration). */
#include "srv_cli.h"

#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn.h"
#include "srv_onnx.h"
#include "srv_store.h"

static const char EXPORT_HELP[] =
    "usage: mnistd export --format onnx [options] MODEL OUT\n"
    "Writes MODEL as an ONNX file OUT (atomically), runnable by onnxruntime and other\n"
    "ONNX runtimes without mnistd. MODEL is a model file ('mnistd train --out', or\n"
    "GET /v1/models/ID/file), or with --state-dir a model id of that daemon state.\n"
    "The graph: input 'image' float32 [N,1,28,28], pixel/255 in [0,1], white ink (1) on\n"
    "black (0) as MNIST -- the daemon's preprocessing of drawings is not included;\n"
    "output 'probabilities' float32 [N,10] (softmax). Opset 13, IR version 8.\n"
    "  --format onnx     the output format (onnx is the only one)\n"
    "  --state-dir DIR   read MODEL as a model id from a daemon's state directory, with\n"
    "                    its data set, test accuracy and training configuration\n"
    "  --dataset NAME    mnist or fashion-mnist: class names in the metadata when MODEL\n"
    "                    is a file (default: the digits 0..9)\n";

static int fail_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "mnistd export: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (see 'mnistd export --help')\n");
  return SRV_EXIT_USAGE;
}

/* The records of one model and its job, copied out of the store. */
typedef struct found {
  int64_t id, job_id;
  int hit;
  char dataset[32];
  double acc, loss;
  char *config;
} found;

static int find_model(const srv_model_row *m, void *u) {
  found *f = u;
  if (m->id != f->id) return 0;
  f->hit = 1;
  snprintf(f->dataset, sizeof f->dataset, "%s", m->dataset ? m->dataset : "");
  f->acc = m->test_accuracy;
  f->loss = m->test_loss;
  f->job_id = m->job_id;
  return 1;
}

static int find_job(const srv_job_row *j, void *u) {
  found *f = u;
  if (j->id != f->job_id) return 0;
  f->config = j->config_json ? strdup(j->config_json) : NULL;
  return 1;
}

/* Looks model `id` up in STATE/mnistd.db and fills f and path. */
static int from_state(const char *state, int64_t id, found *f, char *path, size_t len) {
  char db[PATH_MAX + 16], msg[256];
  struct stat st;
  snprintf(db, sizeof db, "%s/mnistd.db", state);
  if (stat(db, &st) < 0) {
    fprintf(stderr, "mnistd export: %s: no daemon state here (no mnistd.db)\n", state);
    return -1;
  }
  srv_store *s = NULL;
  if (srv_store_open(&s, state, msg, sizeof msg)) {
    fprintf(stderr, "mnistd export: %s\n", msg);
    return -1;
  }
  f->id = id;
  int rc = srv_store_models_each(s, find_model, f);
  if (!rc && f->hit && f->job_id) rc = srv_store_jobs_each(s, find_job, f);
  if (rc) fprintf(stderr, "mnistd export: %s: %s\n", db, srv_store_errmsg(s));
  srv_store_close(s);
  if (rc) return -1;
  if (!f->hit) {
    fprintf(stderr, "mnistd export: model %lld not found in %s\n", (long long)id, state);
    return -1;
  }
  snprintf(path, len, "%s/models/%lld.model", state, (long long)id);
  return 0;
}

int srv_cli_export(int argc, char **argv) {
  static const struct option opts[] = {{"format", required_argument, 0, 'f'},
                                       {"state-dir", required_argument, 0, 's'},
                                       {"dataset", required_argument, 0, 'd'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *format = NULL, *state = NULL, *dataset = NULL;
  int c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'f':
      if (strcmp(optarg, "onnx")) return fail_usage("--format must be onnx, not '%s'", optarg);
      format = optarg;
      break;
    case 's': state = optarg; break;
    case 'd':
      if (strcmp(optarg, "mnist") && strcmp(optarg, "fashion-mnist"))
        return fail_usage("--dataset must be mnist or fashion-mnist, not '%s'", optarg);
      dataset = optarg;
      break;
    case 'h': fputs(EXPORT_HELP, stdout); return SRV_EXIT_OK;
    case ':': return fail_usage("option '%s' needs a value", argv[optind - 1]);
    default: return fail_usage("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (!format) return fail_usage("%s", "--format onnx is required");
  if (argc - optind != 2) return fail_usage("%s", "give MODEL and OUT");
  const char *model = argv[optind], *out = argv[optind + 1];

  found f = {.acc = NAN, .loss = NAN};
  char path[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s", model);
  if (state) {
    long id;
    if (srv_parse_long(model, 1, LONG_MAX, &id))
      return fail_usage("with --state-dir, MODEL is a model id, not '%s'", model);
    if (from_state(state, id, &f, path, sizeof path)) return SRV_EXIT_FAIL;
  }
  int status = SRV_EXIT_FAIL;
  nn_err err = {0};
  nn_model *m = NULL;
  if (nn_model_load(&m, path, &err)) {
    fprintf(stderr, "mnistd export: %s\n", err.msg);
    goto done;
  }
  srv_onnx_info info;
  srv_onnx_info_init(&info);
  info.dataset = f.hit ? f.dataset : dataset;
  info.test_accuracy = f.acc;
  info.test_loss = f.loss;
  info.model_id = f.hit ? f.id : 0;
  info.job_id = f.job_id;
  info.job_config = f.config;
  char msg[512];
  if (srv_onnx_save(m, &info, out, msg, sizeof msg)) {
    fprintf(stderr, "mnistd export: %s\n", msg);
    goto done;
  }
  status = SRV_EXIT_OK;
done:
  nn_model_free(m);
  free(f.config);
  return status;
}
