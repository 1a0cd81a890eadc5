/* The HTTP API's routes: the table at the end and its small handlers.
 * Prediction and evaluation live in srv_predict.c, /metrics in
 * srv_metrics.c, static files and all plumbing in srv_http.c. */
#include "srv_route.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "srv_follow.h"
#include "srv_onnx.h"
#include "srv_spec.h"
#include "srv_util.h"
#include "srv_validate.h"

/* ---------------------------------------------------------------- handlers */

static int h_healthz(req *r, srv_resp *res) {
  (void)r;
  cJSON *d = cJSON_CreateObject();
  cJSON_AddStringToObject(d, "status", "ok");
  return srv_resp_json(res, 200, d);
}

static int h_readyz(req *r, srv_resp *res) {
  srv_model *m = srv_models_active(r->S->models);
  if (!m && r->S->follow) {
    char note[512];
    srv_follow_note(r->S->follow, note, sizeof note);
    return srv_resp_error(res, 503, "%s", note);
  }
  if (!m) {
    char note[256];
    srv_jobs_pending_note(r->S->jobs, note, sizeof note);
    return srv_resp_error(res, 503, "no model loaded yet%s%s", note[0] ? ": " : "",
                      note[0] ? note : " (start a training job: POST /v1/jobs)");
  }
  cJSON *d = cJSON_CreateObject();
  cJSON_AddStringToObject(d, "status", "ready");
  cJSON_AddNumberToObject(d, "model", (double)m->id);
  srv_model_unref(m);
  return srv_resp_json(res, 200, d);
}


static int h_architectures(req *r, srv_resp *res) {
  (void)r;
  return srv_resp_json(res, 200, srv_architectures_json());
}

static int h_architecture_validate(req *r, srv_resp *res) {
  if (!srv_json_body_ok(r)) return srv_need_json(r, res);
  char msg[256];
  int status;
  cJSON *d = srv_spec_validate(r->body, r->len, &status, msg, sizeof msg);
  return d ? srv_resp_json(res, status, d) : srv_resp_error(res, status, "%s", msg);
}

static int h_job_create(req *r, srv_resp *res) {
  if (!srv_json_body_ok(r)) return srv_need_json(r, res);
  srv_job_config c;
  char msg[512];
  if (srv_job_config_parse(r->body, r->len, &c, msg, sizeof msg))
    return srv_resp_error(res, 400, "%s", msg);
  uint32_t tr, te, k = 0;
  char **names = NULL;
  if (srv_data_count(r->S->data, c.dataset, &tr, &te) ||
      srv_data_classes(r->S->data, c.dataset, &names, &k))
    return srv_resp_error(res, 400, "dataset %s is not installed on this server (see GET /v1/datasets)",
                      c.dataset);
  free(names);
  /* The output width against the set's classes (parsing could not know them). */
  nn_err err;
  if (nn_spec_check(c.layers, c.n_layers, NN_INPUT_MNIST, srv_spec_classes(c.layers, c.n_layers, k),
                    c.batch_size, 1, NULL, &err))
    return srv_resp_error(res, 400, "%s", err.msg);
  int64_t id;
  int rc = srv_jobs_submit(r->S->jobs, &c, &id);
  if (rc == -ENOENT) /* deleted since the check above */
    return srv_resp_error(res, 400, "dataset %s is not installed on this server (see GET /v1/datasets)",
                          c.dataset);
  if (rc) return srv_resp_error(res, rc == -ENOSPC ? 507 : 500, "could not record the job: %s",
                            rc == -ENOSPC ? "the disk is full" : srv_store_errmsg(r->S->store));
  char loc[64];
  snprintf(loc, sizeof loc, "/v1/jobs/%lld", (long long)id);
  srv_resp_json(res, 202, srv_jobs_json(r->S->jobs, id));
  srv_resp_header(res, "Location", loc);
  return 202;
}

static int h_jobs(req *r, srv_resp *res) {
  int state = -1;
  long limit = 100;
  const char *q = srv_query(r, "state");
  if (q && (state = srv_job_state_parse(q)) < 0)
    return srv_resp_error(res, 400,
                      "state must be one of queued, running, succeeded, failed, cancelled");
  q = srv_query(r, "limit");
  if (q) {
    uint64_t v;
    if (srv_parse_dec(q, 1000, &v) || v < 1)
      return srv_resp_error(res, 400, "limit must be an integer from 1 to 1000");
    limit = (long)v;
  }
  cJSON *d = cJSON_CreateObject();
  cJSON_AddItemToObject(d, "jobs", srv_jobs_list_json(r->S->jobs, state, (int)limit));
  return srv_resp_json(res, 200, d);
}

static int h_job(req *r, srv_resp *res) {
  cJSON *j = srv_jobs_json(r->S->jobs, r->id);
  if (!j) return srv_resp_error(res, 404, "job %lld not found", (long long)r->id);
  return srv_resp_json(res, 200, j);
}

static int h_job_cancel(req *r, srv_resp *res) {
  int rc = srv_jobs_cancel(r->S->jobs, r->id);
  if (rc == -ENOENT) return srv_resp_error(res, 404, "job %lld not found", (long long)r->id);
  if (rc == -EALREADY) return srv_resp_error(res, 409, "job %lld has already finished", (long long)r->id);
  if (rc) return srv_resp_error(res, rc == -ENOSPC ? 507 : 500,
                                "could not record the cancel (%s): a running job stops, but a restart "
                                "before its end is recorded would resume it",
                                rc == -ENOSPC ? "the disk is full" : "the database failed");
  return srv_resp_json(res, 202, srv_jobs_json(r->S->jobs, r->id));
}

static int h_job_events(req *r, srv_resp *res) {
  const char *fmt = srv_query(r, "format");
  int ndjson = fmt && !strcmp(fmt, "ndjson");
  if (fmt && !ndjson && strcmp(fmt, "sse"))
    return srv_resp_error(res, 400, "format must be sse (default) or ndjson");
  uint64_t last = 0;
  const char *lei = srv_header(r, "Last-Event-ID");
  if (!lei) lei = srv_query(r, "last_event_id");
  if (lei && srv_parse_event_id(lei, &last))
    return srv_resp_error(res, 400,
                      "Last-Event-ID must be an event id: decimal digits, 0 to 9007199254740991");
  int rc = srv_resp_events(res, r, r->id, last, ndjson);
  if (rc == -ENOENT) return srv_resp_error(res, 404, "job %lld not found", (long long)r->id);
  if (rc < 0) return srv_resp_error(res, 500, "out of memory");
  return rc;
}

/* ---- models */

static cJSON *model_json(const srv_model *m, int active) {
  cJSON *o = cJSON_CreateObject();
  char t[32];
  cJSON_AddNumberToObject(o, "id", (double)m->id);
  cJSON_AddStringToObject(o, "arch", m->arch);
  cJSON_AddNumberToObject(o, "parameters", (double)m->m->n_params);
  cJSON_AddItemToObject(o, "layers", srv_spec_to_json(m->m->specs, m->m->n_specs));
  cJSON_AddStringToObject(o, "dataset", m->dataset);
  cJSON_AddNumberToObject(o, "test_accuracy", round(m->test_accuracy * 1e6) / 1e6);
  cJSON_AddNumberToObject(o, "test_loss", round(m->test_loss * 1e6) / 1e6);
  if (m->job_id) cJSON_AddNumberToObject(o, "job_id", (double)m->job_id);
  else cJSON_AddNullToObject(o, "job_id");
  cJSON_AddStringToObject(o, "created_at", srv_iso8601(m->created_ms, t, sizeof t));
  cJSON_AddNumberToObject(o, "file_bytes", (double)m->file_bytes);
  cJSON_AddBoolToObject(o, "active", active);
  cJSON *c = cJSON_AddArrayToObject(o, "classes");
  for (uint32_t k = 0; k < m->n_classes; k++) cJSON_AddItemToArray(c, cJSON_CreateString(m->classes[k]));
  return o;
}

static void add_model(const srv_model *m, int active, void *u) {
  cJSON_AddItemToArray((cJSON *)u, model_json(m, active));
}

static int h_models(req *r, srv_resp *res) {
  cJSON *d = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(d, "models");
  srv_models_each(r->S->models, add_model, a);
  /* Newest first, like the job list. */
  cJSON *rev = cJSON_CreateArray();
  int n = cJSON_GetArraySize(a);
  for (int i = n - 1; i >= 0; i--) cJSON_AddItemToArray(rev, cJSON_DetachItemFromArray(a, i));
  cJSON_ReplaceItemInObject(d, "models", rev);
  return srv_resp_json(res, 200, d);
}

static int h_model(req *r, srv_resp *res) {
  srv_model *m = srv_models_get(r->S->models, r->id);
  if (!m) return srv_resp_error(res, 404, "model %lld not found", (long long)r->id);
  cJSON *o = model_json(m, srv_models_active_id(r->S->models) == m->id);
  srv_model_unref(m);
  return srv_resp_json(res, 200, o);
}

/* ?format=onnx: the model as ONNX (srv_onnx.h), with the daemon's records
 * of it (data set, test accuracy, the training job's configuration). */
static int model_file_onnx(req *r, srv_resp *res, srv_model *m) {
  srv_onnx_info info;
  int rc = srv_onnx_info_load(&info, r->S->store, m->id);
  if (!rc) rc = srv_onnx_info_set_classes(&info, (const char *const *)m->classes, m->n_classes);
  if (rc) {
    srv_model_unref(m);
    return srv_resp_error(res, rc == -ENOENT ? 404 : 500, "records of model %lld: %s", (long long)r->id,
                      rc == -ENOENT ? "not found" : srv_store_errmsg(r->S->store));
  }
  uint8_t *buf;
  size_t len;
  char msg[512];
  rc = srv_onnx_export(m->m, &info, &buf, &len, msg, sizeof msg);
  srv_onnx_info_clear(&info);
  srv_model_unref(m);
  if (rc == -EINVAL) return srv_resp_error(res, 422, "model %lld cannot be exported to ONNX: %s",
                                       (long long)r->id, msg);
  if (rc) return srv_resp_error(res, 500, "ONNX export of model %lld failed: %s", (long long)r->id, msg);
  char disp[96];
  snprintf(disp, sizeof disp, "attachment; filename=\"mnistd-model-%lld.onnx\"", (long long)r->id);
  return srv_resp_download(res, buf, len, -1, disp);
}

static int h_model_file(req *r, srv_resp *res) {
  const char *fmt = srv_query(r, "format");
  if (fmt && strcmp(fmt, "onnx") && strcmp(fmt, "mnistd"))
    return srv_resp_error(res, 400, "format must be mnistd (the native file, default) or onnx");
  srv_model *m = srv_models_get(r->S->models, r->id);
  if (!m) return srv_resp_error(res, 404, "model %lld not found", (long long)r->id);
  if (fmt && !strcmp(fmt, "onnx")) return model_file_onnx(r, res, m);
  srv_model_unref(m);
  char path[PATH_MAX + 64];
  srv_models_path(r->S->models, r->id, path, sizeof path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    if (fd >= 0) close(fd);
    return srv_resp_error(res, 500, "model file of %lld is unreadable", (long long)r->id);
  }
  char disp[96];
  snprintf(disp, sizeof disp, "attachment; filename=\"mnistd-model-%lld.model\"",
           (long long)r->id);
  return srv_resp_download(res, NULL, (size_t)st.st_size, fd, disp);
}

static int h_model_activate(req *r, srv_resp *res) {
  int rc = srv_models_activate(r->S->models, r->id);
  if (rc == -ENOENT) return srv_resp_error(res, 404, "model %lld not found", (long long)r->id);
  if (rc) return srv_resp_error(res, 500, "could not record the active model: %s",
                            srv_store_errmsg(r->S->store));
  srv_model *m = srv_models_get(r->S->models, r->id);
  if (!m) return srv_resp_error(res, 404, "model %lld not found", (long long)r->id);
  cJSON *o = model_json(m, 1);
  srv_model_unref(m);
  return srv_resp_json(res, 200, o);
}

static int h_model_delete(req *r, srv_resp *res) {
  int rc = srv_models_delete(r->S->models, r->id);
  if (rc == -ENOENT) return srv_resp_error(res, 404, "model %lld not found", (long long)r->id);
  if (rc == -EBUSY)
    return srv_resp_error(res, 409, "model %lld is the active model; activate another one first",
                      (long long)r->id);
  if (rc) return srv_resp_error(res, 500, "could not delete: %s", srv_store_errmsg(r->S->store));
  return srv_resp_buf(res, 204, "application/json", "", 0, 0);
}

/* ---- samples and evaluation */


/* ---------------------------------------------------------------- routing */

/* The route table. Adding an endpoint = one small handler (request in,
 * calls on jobs/registry/core, a filled srv_resp and its status out) plus one row here:
 * method, pattern (":id" takes a positive number, handed over as r->id),
 * handler, and 1 if it mutates (then it needs the API token and a
 * same-origin browser). Order matters only between patterns that match the
 * same path: the first row wins. At most SRV_MAX_ROUTES rows (metrics keep
 * one counter set per row). */
/* ---- the active model and the daemon-wide event stream (replicas) */

/* The model answering predictions, with an ETag that changes with it (a
 * replica answers its primary's id and so the same ETag). */
static int h_model_active(req *r, srv_resp *res) {
  srv_model *m = srv_models_active(r->S->models);
  if (!m) {
    char note[512];
    if (r->S->follow) srv_follow_note(r->S->follow, note, sizeof note);
    else srv_jobs_pending_note(r->S->jobs, note, sizeof note);
    return srv_resp_error(res, 503, "no active model yet%s%s", note[0] ? ": " : "", note);
  }
  char etag[48];
  snprintf(etag, sizeof etag, "\"model-%lld\"", (long long)m->id);
  const char *inm = srv_header(r, "If-None-Match");
  if (inm && !strcmp(inm, etag)) {
    srv_model_unref(m);
    return srv_resp_not_modified(res, etag);
  }
  cJSON *o = model_json(m, 1);
  srv_model_unref(m);
  if (r->S->follow) cJSON_AddStringToObject(o, "primary", srv_follow_url(r->S->follow));
  srv_resp_json(res, 200, o);
  srv_resp_header(res, "ETag", etag);
  return 200;
}

/* GET /v1/events: SSE of model.activated and job.state (srv_events.h). */
static int h_events(req *r, srv_resp *res) {
  uint64_t last = 0;
  const char *lei = srv_header(r, "Last-Event-ID");
  if (!lei) lei = srv_query(r, "last_event_id");
  if (lei && srv_parse_event_id(lei, &last))
    return srv_resp_error(res, 400,
                          "Last-Event-ID must be an event id: decimal digits, 0 to 9007199254740991");
  char hello[640];
  int64_t id = srv_models_active_id(r->S->models);
  if (id == 0) snprintf(hello, sizeof hello, "{\"model\":null}");
  else if (r->S->follow)
    snprintf(hello, sizeof hello, "{\"model\":%lld,\"primary\":\"%.500s\"}", (long long)id,
             srv_follow_url(r->S->follow));
  else snprintf(hello, sizeof hello, "{\"model\":%lld}", (long long)id);
  int rc = srv_resp_daemon_events(res, r, last, hello);
  return rc < 0 ? srv_resp_error(res, 500, "out of memory") : rc;
}

const route srv_route_table[] = {
    {"GET", "/healthz", h_healthz, 0},
    {"GET", "/readyz", h_readyz, 0},
    {"GET", "/metrics", h_metrics, 0},
    {"GET", "/v1/datasets", h_datasets, 0},
    {"POST", "/v1/datasets", h_dataset_create, 1},
    {"GET", "/v1/datasets/:name", h_dataset, 0},
    {"DELETE", "/v1/datasets/:name", h_dataset_delete, 1},
    {"GET", "/v1/datasets/:name/samples/random", h_dataset_sample, 0},
    {"GET", "/v1/architectures", h_architectures, 0},
    {"POST", "/v1/architectures/validate", h_architecture_validate, 0},
    {"POST", "/v1/jobs", h_job_create, 1},
    {"GET", "/v1/jobs", h_jobs, 0},
    {"GET", "/v1/jobs/:id", h_job, 0},
    {"GET", "/v1/jobs/:id/events", h_job_events, 0},
    {"POST", "/v1/jobs/:id/cancel", h_job_cancel, 1},
    {"POST", "/v1/models/mnist:predict", h_tfs_predict, 0},
    {"GET", "/v1/models", h_models, 0},
    {"GET", "/v1/models/:id", h_model, 0},
    {"DELETE", "/v1/models/:id", h_model_delete, 1},
    {"GET", "/v1/models/:id/file", h_model_file, 0},
    {"GET", "/v1/models/:id/evaluation", h_evaluation, 0},
    {"POST", "/v1/models/:id/activate", h_model_activate, 1},
    {"POST", "/v1/predict", h_predict, 0},
    {"GET", "/v1/samples/random", h_sample, 0},
    {"GET", "/v1/models/active", h_model_active, 0},
    {"GET", "/v1/events", h_events, 0},
};
const size_t srv_route_count = sizeof srv_route_table / sizeof *srv_route_table;


size_t srv_routes(const srv_route_info **out) {
  static srv_route_info info[sizeof srv_route_table / sizeof *srv_route_table];
  for (size_t i = 0; i < srv_route_count; i++)
    info[i] = (srv_route_info){srv_route_table[i].method, srv_route_table[i].pattern, srv_route_table[i].mutating};
  *out = info;
  return srv_route_count;
}

