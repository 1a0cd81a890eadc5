/* The data set routes (issue 13): upload, list, get, delete, samples.
 * The store and the conversion live in srv_datasets.c and srv_dsparse.c;
 * these handlers only translate HTTP (the body itself is streamed to the
 * upload's file by srv_http.c). */
#include "srv_route.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "srv_util.h"
#include "srv_validate.h"

static int sample_of(req *r, srv_resp *res, const char *name);


static const char *const DS_TYPES[] = {"application/zip", "application/x-zip-compressed",
                                       "application/x-tar", "application/gzip",
                                       "application/x-gzip", "application/x-gtar", "text/csv"};

static cJSON *builtin_json(srv *S, const char *name) {
  uint32_t tr, te;
  if (srv_data_count(S->data, name, &tr, &te)) return NULL;
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "name", name);
  cJSON *c = cJSON_AddArrayToObject(o, "classes");
  const char *const *names = srv_dataset_builtin_classes(name);
  for (int i = 0; i < NN_CLASSES; i++) cJSON_AddItemToArray(c, cJSON_CreateString(names[i]));
  cJSON_AddNumberToObject(o, "train", tr);
  cJSON_AddNumberToObject(o, "test", te);
  cJSON_AddNullToObject(o, "bytes");
  cJSON_AddNullToObject(o, "sha256");
  cJSON_AddStringToObject(o, "source_format", "idx");
  cJSON_AddNullToObject(o, "created_at");
  cJSON_AddBoolToObject(o, "builtin", 1);
  return o;
}

int h_datasets(req *r, srv_resp *res) {
  cJSON *d = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(d, "datasets");
  static const char *names[] = {"mnist", "fashion-mnist"};
  for (size_t i = 0; i < 2; i++) {
    cJSON *o = builtin_json(r->S, names[i]);
    if (o) cJSON_AddItemToArray(a, o);
  }
  srv_datasets_list(r->S->datasets, a);
  return srv_resp_json(res, 200, d);
}

/* Everything that can be refused before the body is: the name, the type,
 * the size. Then the body goes to a temporary file as it arrives. */
int srv_dataset_upload_head(req *r, srv_resp *res) {
  const char *name = srv_query(r, "name");
  if (!name || !srv_dataset_name_ok(name))
    return srv_resp_error(res, 400, "give the data set a name: ?name=NAME with NAME matching "
                      "[a-z0-9][a-z0-9._-]{0,63} (got " QUOTE ")", name ? name : "none");
  cJSON *have = srv_datasets_json(r->S->datasets, name);
  if (have || srv_dataset_is_builtin(name)) {
    cJSON_Delete(have);
    return srv_resp_error(res, 409, "a data set named %s exists already (DELETE /v1/datasets/%s "
                      "first, or pick another name)", name, name);
  }
  char ct[96];
  srv_media_type(r, ct, sizeof ct);
  int known = 0;
  for (size_t i = 0; i < sizeof DS_TYPES / sizeof *DS_TYPES; i++) known |= !strcmp(ct, DS_TYPES[i]);
  if (!known)
    return srv_resp_error(res, 415, "Content-Type " QUOTE " is not a data set format; send "
                      "application/zip, application/x-tar, application/gzip (a .tar.gz) or "
                      "text/csv", ct[0] ? ct : "(none)");
  const srv_ds_config *dc = srv_datasets_config(r->S->datasets);
  const char *cl = srv_header(r, "Content-Length");
  uint64_t clv;
  if (cl && !srv_parse_dec(cl, UINT64_MAX, &clv) && clv > dc->max_body)
    return srv_resp_error(res, 413, "the upload is %llu bytes; this server accepts data sets up to "
                      "%llu bytes (--max-dataset-upload)", (unsigned long long)clv,
                      (unsigned long long)dc->max_body);
  int rc = srv_ds_upload_open(r->S->datasets, &r->upload);
  if (rc) return srv_resp_error(res, rc == -ENOSPC ? 507 : 500, "cannot store the upload: %s",
                            strerror(-rc));
  return 0;
}

static int ds_status(int rc) {
  switch (rc) {
  case -EEXIST: case -EBUSY: return 409;
  case -EINVAL: return 400;
  case -E2BIG: return 413;
  case -ENOTSUP: return 415;
  case -EDQUOT: case -ENOSPC: return 507;
  default: return 500;
  }
}

/* An upload's conversion, handed to libuv's pool: everything it needs is
 * copied out of the request. */
typedef struct create_ctx {
  srv_datasets *d;
  srv_ds_upload *u;
  srv_ds_create c;
  char name[72], ct[96];
} create_ctx;

static int create_work(void *ctx, srv_resp *res) {
  create_ctx *x = ctx;
  cJSON *out = NULL;
  char msg[700] = "", loc[160];
  int rc = srv_datasets_create(x->d, x->u, &x->c, &out, msg, sizeof msg), st;
  if (rc) {
    st = srv_resp_error(res, ds_status(rc), "%s", msg[0] ? msg : strerror(-rc));
    if (rc == -EBUSY) srv_resp_header(res, "Retry-After", "1"); /* a delete takes ~ms */
  } else {
    snprintf(loc, sizeof loc, "/v1/datasets/%s", x->name);
    st = srv_resp_json(res, 201, out);
    srv_resp_header(res, "Location", loc);
  }
  free(x);
  return st;
}

int h_dataset_create(req *r, srv_resp *res) {
  if (r->upload_err)
    return r->upload_err == -E2BIG
               ? srv_resp_error(res, 413, "the upload is larger than %llu bytes, this server's limit "
                            "(--max-dataset-upload)",
                            (unsigned long long)srv_datasets_config(r->S->datasets)->max_body)
               : srv_resp_error(res, ds_status(r->upload_err), "cannot store the upload: %s",
                            strerror(-r->upload_err));
  if (!r->upload || srv_ds_upload_size(r->upload) == 0)
    return srv_resp_error(res, 400, "the body is empty: send the archive or CSV as the body");
  char ct[96];
  const char *pp = srv_query(r, "preprocess"), *tf = srv_query(r, "test_fraction");
  srv_ds_create c = {srv_query(r, "name"), srv_media_type(r, ct, sizeof ct), 1, 1.0 / 6};
  if (pp && strcmp(pp, "none") && strcmp(pp, "mnist"))
    return srv_resp_error(res, 400, "preprocess must be none or mnist, not " QUOTE, pp);
  c.preprocess = !pp || strcmp(pp, "none");
  if (tf) {
    char *end;
    c.test_fraction = strtod(tf, &end);
    if (*end || !(c.test_fraction >= 0.01 && c.test_fraction <= 0.5))
      return srv_resp_error(res, 400, "test_fraction must be a number from 0.01 to 0.5, not " QUOTE,
                        tf);
  }
  create_ctx *x = malloc(sizeof *x);
  if (!x) return srv_resp_error(res, 500, "out of memory");
  x->d = r->S->datasets;
  x->u = r->upload; /* r's: freed when the answer has been sent */
  x->c = c;
  snprintf(x->name, sizeof x->name, "%s", c.name);
  snprintf(x->ct, sizeof x->ct, "%s", ct);
  x->c.name = x->name;
  x->c.content_type = x->ct;
  /* The conversion takes 0.6 s to seconds (Fashion-MNIST as IDX): on the
   * HTTP thread it would stall every connection that thread serves. */
  return srv_defer(r, res, create_work, x);
}

int h_dataset(req *r, srv_resp *res) {
  cJSON *o = srv_dataset_is_builtin(r->name) ? builtin_json(r->S, r->name)
                                             : srv_datasets_json(r->S->datasets, r->name);
  if (!o) return srv_resp_error(res, 404, "data set " QUOTE " not found (see GET /v1/datasets)", r->name);
  return srv_resp_json(res, 200, o);
}

int h_dataset_delete(req *r, srv_resp *res) {
  if (srv_dataset_is_builtin(r->name))
    return srv_resp_error(res, 409, "%s is built in (installed beside the binary) and cannot be "
                      "deleted", r->name);
  int64_t job = 0;
  int rc = srv_jobs_dataset_delete(r->S->jobs, r->name, &job);
  if (rc == -EBUSY)
    return srv_resp_error(res, 409, "data set %s is in use by job %lld (queued or running); cancel "
                      "it or wait for it to finish", r->name, (long long)job);
  if (rc == -ENOENT) return srv_resp_error(res, 404, "data set " QUOTE " not found", r->name);
  /* The failure may be the store's or the file's (rename, fsync): the
   * log has the detail, the client what it means. */
  if (rc)
    return srv_resp_error(res, rc == -ENOSPC ? 507 : 500, "could not delete data set %s: %s; it "
                          "is still there (the daemon's log says why): try again", r->name,
                          strerror(-rc));
  return srv_resp_buf(res, 204, "application/json", "", 0, 0);
}




int h_sample(req *r, srv_resp *res) {
  const char *name = srv_query(r, "dataset");
  if (!name) name = "mnist";
  if (!srv_dataset_name_ok(name))
    return srv_resp_error(res, 400, "dataset must be mnist, fashion-mnist or an uploaded data set");
  return sample_of(r, res, name);
}

static int sample_of(req *r, srv_resp *res, const char *name) {
  if (!srv_dataset_name_ok(name))
    return srv_resp_error(res, 404, "data set " QUOTE " not found", name);
  char **classes = NULL;
  uint32_t n_classes = 0;
  if (srv_data_classes(r->S->data, name, &classes, &n_classes))
    return srv_resp_error(res, 404, "data set %s not found (see GET /v1/datasets)", name);
  const nn_dataset *ds;
  char msg[512];
  int rc = srv_data_get(r->S->data, name, NN_SPLIT_TEST, &ds, msg, sizeof msg);
  if (rc) {
    free(classes);
    return srv_resp_error(res, rc == -ENOENT ? 404 : 500, "%s", msg);
  }
  static _Thread_local unsigned seed;
  if (!seed) seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)&seed;
  uint32_t idx = (uint32_t)rand_r(&seed) % ds->n;
  const char *q = srv_query(r, "index");
  if (q) {
    uint64_t v;
    if (srv_parse_dec(q, (uint64_t)ds->n - 1, &v)) {
      srv_data_put(r->S->data, ds);
      free(classes);
      return srv_resp_error(res, 400, "index must be from 0 to %u", ds->n - 1);
    }
    idx = (uint32_t)v;
  }
  cJSON *d = cJSON_CreateObject();
  cJSON_AddStringToObject(d, "dataset", name);
  cJSON_AddNumberToObject(d, "index", idx);
  cJSON_AddNumberToObject(d, "label", ds->labels[idx]);
  cJSON_AddStringToObject(d, "class", ds->labels[idx] < n_classes ? classes[ds->labels[idx]] : "");
  cJSON_AddItemToObject(d, "pixels", srv_pixels_json(ds->images + (size_t)idx * NN_IMAGE_SIZE));
  srv_data_put(r->S->data, ds);
  free(classes);
  return srv_resp_json(res, 200, d);
}


int h_dataset_sample(req *r, srv_resp *res) { return sample_of(r, res, r->name); }
