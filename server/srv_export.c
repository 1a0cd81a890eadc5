/* `mnistd export`: writes a model as ONNX (srv_onnx.h), from a model file
 * or from a daemon's state directory (then with its records: data set,
 * test accuracy, training job configuration). */
#include "srv_cli.h"

#include <cJSON.h>
#include <errno.h>
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

static int fail_usage(srv_err *err, const char *fmt, const char *arg) {
  srv_err_printf(err, fmt, arg);
  return SRV_EUSAGE;
}

/* The class names a model's metadata file (STATE/models/ID.json) records
 * for it (an uploaded set's): into info, if the file has them. */
static int classes_from_meta(const char *path, srv_onnx_info *info) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0; /* older models: the data set's names */
  char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  cJSON *o = cJSON_Parse(buf), *c = cJSON_GetObjectItemCaseSensitive(o, "classes"), *e;
  const char *names[NN_MAX_CLASSES];
  uint32_t k = 0;
  cJSON_ArrayForEach(e, c) {
    if (!cJSON_IsString(e) || k == NN_MAX_CLASSES) break;
    names[k++] = e->valuestring;
  }
  int rc = cJSON_IsArray(c) && k == (uint32_t)cJSON_GetArraySize(c)
               ? srv_onnx_info_set_classes(info, names, k) : 0;
  cJSON_Delete(o);
  return rc;
}

/* Looks model `id` up in STATE/mnistd.db: its records into info, its file
 * into path. 0, or a negative errno with the message in err. */
static int from_state(const char *state, int64_t id, srv_onnx_info *info, char *path,
                      size_t len, srv_err *err) {
  char db[PATH_MAX + 16], msg[700] = "";
  struct stat st;
  snprintf(db, sizeof db, "%s/mnistd.db", state);
  if (stat(db, &st) < 0) {
    srv_err_printf(err, "%s: no daemon state here (no mnistd.db)", state);
    return -ENOENT;
  }
  srv_store *s = NULL;
  int rc;
  /* Read-only, beside a running daemon as after it stopped: an export
   * changes nothing in its state (srv_store_open_readonly). A daemon that
   * started and folded its log into the file during the read makes us
   * read again. */
  for (int tries = 0;; tries++) {
    if ((rc = srv_store_open_readonly(&s, state, msg, sizeof msg))) {
      srv_err_printf(err, "%s", msg[0] ? msg : strerror(-rc));
      return rc;
    }
    rc = srv_onnx_info_load(info, s, id);
    if (tries == 2 || !srv_store_readonly_changed(s, state)) break;
    srv_onnx_info_clear(info);
    srv_store_close(s);
  }
  if (rc == -ENOENT)
    srv_err_printf(err, "model %lld not found in %s", (long long)id, state);
  else if (rc)
    srv_err_printf(err, "%s: %s", db, rc == -ENOMEM ? "out of memory" : srv_store_errmsg(s));
  srv_store_close(s);
  snprintf(path, len, "%s/models/%lld.json", state, (long long)id);
  if (!rc && classes_from_meta(path, info)) {
    fprintf(stderr, "mnistd export: out of memory\n");
    rc = -ENOMEM;
  }
  snprintf(path, len, "%s/models/%lld.model", state, (long long)id);
  return rc;
}

int srv_cli_export(int argc, char **argv, srv_err *err) {
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
      if (strcmp(optarg, "onnx")) return fail_usage(err, "--format must be onnx, not '%s'", optarg);
      format = optarg;
      break;
    case 's': state = optarg; break;
    case 'd':
      if (strcmp(optarg, "mnist") && strcmp(optarg, "fashion-mnist"))
        return fail_usage(err, "--dataset must be mnist or fashion-mnist, not '%s'", optarg);
      dataset = optarg;
      break;
    case 'h': fputs(EXPORT_HELP, stdout); return 0;
    case ':': return fail_usage(err, "option '%s' needs a value", argv[optind - 1]);
    default: return fail_usage(err, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (!format) return fail_usage(err, "%s", "--format onnx is required");
  if (argc - optind != 2) return fail_usage(err, "%s", "give MODEL and OUT");
  const char *model = argv[optind], *out = argv[optind + 1];

  srv_onnx_info info;
  srv_onnx_info_init(&info);
  char path[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s", model);
  if (state) {
    long id;
    if (srv_parse_long(model, 1, LONG_MAX, &id))
      return fail_usage(err, "with --state-dir, MODEL is a model id, not '%s'", model);
    int rc = from_state(state, id, &info, path, sizeof path, err);
    if (rc) {
      srv_onnx_info_clear(&info);
      return rc;
    }
  } else if (dataset) {
    snprintf(info.dataset, sizeof info.dataset, "%s", dataset);
  }
  int rc;
  nn_err nerr = {0};
  nn_model *m = NULL;
  if ((rc = nn_model_load(&m, path, &nerr))) {
    srv_err_printf(err, "%s", nerr.msg);
    goto done;
  }
  char msg[512];
  if ((rc = srv_onnx_save(m, &info, out, msg, sizeof msg))) {
    srv_err_printf(err, "%s", msg);
    goto done;
  }
done:
  nn_model_free(m);
  srv_onnx_info_clear(&info);
  return rc;
}
