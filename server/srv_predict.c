/* The prediction path: which model answers, the per-thread workspace,
 * and one chunk loop shared by POST /v1/predict, the TF-Serving endpoint
 * and evaluation. */
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
#include <pthread.h>

#include "srv_follow.h"
#include "srv_image.h"
#include "srv_util.h"
#include "srv_validate.h"

/* ---- prediction */

/* One workspace per HTTP thread, rebuilt when the model changes. The
 * thread holds a reference to the model its workspace was built for, so a
 * freed model's address reused later cannot fool the check; a thread-key
 * destructor gives both back when libmicrohttpd's threads end. */
#define PREDICT_CHUNK 64
typedef struct tl_ws {
  srv_model *m;
  nn_workspace *ws;
} tl_ws;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void tl_free(void *p) {
  tl_ws *t = p;
  nn_workspace_free(t->ws);
  srv_model_unref(t->m);
  free(t);
}

static void tl_init(void) { pthread_key_create(&tl_key, tl_free); }

static nn_workspace *workspace_for(srv_model *m) {
  pthread_once(&tl_once, tl_init);
  tl_ws *t = pthread_getspecific(tl_key);
  if (!t) {
    if (!(t = calloc(1, sizeof *t))) return NULL;
    pthread_setspecific(tl_key, t);
  }
  if (t->m != m) {
    nn_workspace_free(t->ws);
    srv_model_unref(t->m);
    t->m = NULL;
    t->ws = NULL;
    if (nn_workspace_create(&t->ws, m->m, PREDICT_CHUNK)) return NULL;
    /* Registry models never change: single images may take the sparse path
     * (on failure the workspace just keeps the dense one). */
    (void)nn_workspace_pin(t->ws, m->m);
    srv_model_ref(m);
    t->m = m;
  }
  return t->ws;
}

/* The one chunk loop: runs m over n images (u8 pixels or f32 inputs,
 * exactly one non-NULL) in chunks the workspace takes. Without each, the
 * probabilities of all n images go to probs (n x classes); with it,
 * probs holds one chunk (PREDICT_CHUNK x classes) and each sees every
 * chunk in turn, off being the index of its first image. */
typedef void (*chunk_fn)(const float *probs, uint32_t off, uint32_t k, void *u);

/* Returns 0, or the core's negative code (nothing sensible is in probs
 * then): -EDOM for a model whose input is not one 28x28 image (it cannot
 * read these buffers, whatever file it came from). */
static int predict_chunks(const srv_model *m, nn_workspace *ws, const uint8_t *u8,
                          const float *f32, uint32_t n, float *probs, chunk_fn each, void *u) {
  if (m->m->n_inputs != NN_IMAGE_SIZE) return -EDOM;
  for (uint32_t off = 0; off < n; off += PREDICT_CHUNK) {
    uint32_t k = n - off < PREDICT_CHUNK ? n - off : PREDICT_CHUNK;
    float *out = each ? probs : probs + (size_t)off * nn_model_classes(m->m);
    int rc = u8 ? nn_predict_u8(m->m, ws, u8 + (size_t)off * NN_IMAGE_SIZE, k, out)
                : nn_predict_f32(m->m, ws, f32 + (size_t)off * NN_IMAGE_SIZE, k, out);
    if (rc) return rc;
    if (each) each(probs, off, k, u);
  }
  return 0;
}

/* The answer when predicting failed: a model it cannot read images with
 * (its input is not 784 values) is a conflict the client can act on
 * (another model), never a server error. */
static int predict_failed(srv_resp *res, long long id, int rc) {
  if (rc == -EDOM)
    return srv_resp_error(res, 409, "model %lld cannot predict 28x28 images (its input has "
                          "another size); choose another model with ?model=ID", id);
  return srv_resp_error(res, 500, "model %lld: prediction failed: %s", id, nn_strerror(rc));
}

/* Predicts n images (u8 or f32, one non-NULL) with m for a request: 0, with
 * *probs (n x classes, the caller frees it) and the predictions counted in
 * /metrics. Otherwise res holds the error, m's reference is dropped and
 * the status is returned. */
static int predict_all(req *r, srv_resp *res, srv_model *m, const uint8_t *u8, const float *f32,
                       uint32_t n, float **probs) {
  nn_workspace *ws = workspace_for(m);
  float *p = malloc((size_t)n * nn_model_classes(m->m) * sizeof(float));
  int rc = p && ws ? predict_chunks(m, ws, u8, f32, n, p, NULL, NULL) : 0;
  if (!p || !ws || rc) {
    long long id = (long long)m->id;
    free(p);
    srv_model_unref(m);
    return rc ? predict_failed(res, id, rc) : srv_resp_error(res, 500, "out of memory");
  }
  atomic_fetch_add(&r->S->metrics.predictions, n);
  *probs = p;
  return 0;
}

/* A model's name for output k (its data set's class; "?" only if the
 * names could not be allocated). */
static const char *model_class(const srv_model *m, int k) {
  return m->classes && k >= 0 && (uint32_t)k < m->n_classes ? m->classes[k] : "?";
}

static srv_model *predict_model(req *r, int *status, char *msg, size_t len) {
  const char *q = srv_query(r, "model");
  srv_model *m;
  if (q) {
    uint64_t v;
    if (srv_parse_dec(q, INT64_MAX, &v) || v == 0) {
      *status = 400;
      snprintf(msg, len, "model must be a model id (a positive number)");
      return NULL;
    }
    long long id = (long long)v;
    if (!(m = srv_models_get(r->S->models, id))) {
      *status = 404;
      snprintf(msg, len, "model %lld not found", id);
    }
    return m;
  }
  if (!(m = srv_models_active(r->S->models)) && r->S->follow) {
    *status = 503;
    srv_follow_note(r->S->follow, msg, len);
  } else if (!m) {
    char note[200];
    srv_jobs_pending_note(r->S->jobs, note, sizeof note);
    *status = 503;
    snprintf(msg, len, "no model loaded yet%s%s", note[0] ? ": " : "",
             note[0] ? note : " (start a training job: POST /v1/jobs)");
  }
  return m;
}

int h_predict(req *r, srv_resp *res) {
  char ct[96], msg[512];
  srv_media_type(r, ct, sizeof ct);
  uint8_t *px = NULL, one[NN_IMAGE_SIZE];
  uint32_t n = 0;
  int empty = 0, rc, explain = 0;
  const char *ex = srv_query(r, "explain");
  if (ex) explain = !strcmp(ex, "1") || !strcmp(ex, "true");
  if (!strcmp(ct, "application/json")) {
    rc = srv_predict_json_parse(r->body, r->len, &px, &n, msg, sizeof msg);
    if (rc) return srv_resp_error(res, rc == -E2BIG ? 413 : rc == -ENOMEM ? 500 : 400, "%s", msg);
  } else {
    srv_image_format f = srv_image_sniff(ct, (const uint8_t *)r->body, r->len);
    int known = !ct[0] || !strcmp(ct, "application/octet-stream") || !strcmp(ct, "image/png") ||
                !strcmp(ct, "image/x-portable-graymap") || !strcmp(ct, "image/x-pgm") ||
                !strcmp(ct, "application/x-www-form-urlencoded");
    if (!known || f == SRV_IMAGE_UNKNOWN)
      return srv_resp_error(res, 415,
                        "unsupported body (" QUOTE "): send JSON {\"image\":[784 numbers]} "
                        "with Content-Type: application/json, image/png, "
                        "image/x-portable-graymap (PGM) or application/octet-stream "
                        "(N x 784 bytes)",
                        ct[0] ? ct : "no Content-Type");
    if (f == SRV_IMAGE_RAW) {
      size_t cnt = 0;
      if (srv_image_raw_count(r->len, &cnt, msg, sizeof msg) < 0)
        return srv_resp_error(res, 400, "%s", msg);
      if (cnt > SRV_MAX_PREDICT_IMAGES)
        return srv_resp_error(res, 413, "%zu images in one request; at most %d", cnt,
                          SRV_MAX_PREDICT_IMAGES);
      px = malloc(r->len);
      if (!px) return srv_resp_error(res, 500, "out of memory");
      memcpy(px, r->body, r->len);
      n = (uint32_t)cnt;
    } else {
      rc = srv_image_from_bytes(ct, (const uint8_t *)r->body, r->len, one, &empty, msg,
                                sizeof msg);
      if (rc == -E2BIG) return srv_resp_error(res, 413, "%s", msg);
      if (rc == -ENOTSUP) return srv_resp_error(res, 415, "%s", msg);
      if (rc == -ENOMEM) return srv_resp_error(res, 500, "out of memory");
      if (rc) return srv_resp_error(res, 400, "%s", msg);
      n = 1;
    }
  }
  int status = 500;
  srv_model *m = predict_model(r, &status, msg, sizeof msg);
  if (!m) {
    free(px);
    return srv_resp_error(res, status, "%s", msg);
  }
  const uint8_t *images = px ? px : one;
  const uint32_t K = nn_model_classes(m->m);
  float *probs;
  if ((rc = predict_all(r, res, m, images, NULL, n, &probs))) {
    free(px);
    return rc;
  }
  cJSON *d = cJSON_CreateObject();
  cJSON_AddNumberToObject(d, "model", (double)m->id);
  cJSON *preds = cJSON_AddArrayToObject(d, "predictions");
  for (uint32_t i = 0; i < n; i++) {
    const float *p = probs + (size_t)i * K;
    int label = nn_argmax_n(p, K);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "label", label);
    cJSON_AddStringToObject(o, "class", model_class(m, label));
    cJSON_AddNumberToObject(o, "confidence", round(p[label] * 1e6) / 1e6);
    double pr[NN_MAX_CLASSES];
    for (uint32_t k = 0; k < K; k++) pr[k] = round(p[k] * 1e6) / 1e6;
    cJSON_AddItemToObject(o, "probabilities", cJSON_CreateDoubleArray(pr, (int)K));
    cJSON_AddBoolToObject(o, "empty",
                          px ? srv_image_is_empty(images + (size_t)i * NN_IMAGE_SIZE) : empty);
    if (explain)
      cJSON_AddItemToObject(o, "pixels", srv_pixels_json(images + (size_t)i * NN_IMAGE_SIZE));
    cJSON_AddItemToArray(preds, o);
  }
  srv_model_unref(m);
  free(probs);
  free(px);
  return srv_resp_json(res, 200, d);
}

int h_tfs_predict(req *r, srv_resp *res) {
  if (!srv_json_body_ok(r)) return srv_need_json(r, res);
  char msg[512];
  float *x = NULL;
  uint32_t n = 0;
  int rc = srv_tfs_parse(r->body, r->len, &x, &n, msg, sizeof msg);
  if (rc) return srv_resp_error(res, rc == -E2BIG ? 413 : rc == -ENOMEM ? 500 : 400, "%s", msg);
  int status = 500;
  srv_model *m = predict_model(r, &status, msg, sizeof msg);
  if (!m) {
    free(x);
    return srv_resp_error(res, status, "%s", msg);
  }
  const uint32_t K = nn_model_classes(m->m);
  float *probs;
  if ((rc = predict_all(r, res, m, NULL, x, n, &probs))) {
    free(x);
    return rc;
  }
  srv_model_unref(m);
  cJSON *d = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(d, "predictions");
  for (uint32_t i = 0; i < n; i++) {
    double pr[NN_MAX_CLASSES];
    for (uint32_t k = 0; k < K; k++) pr[k] = round(probs[(size_t)i * K + k] * 1e6) / 1e6;
    cJSON_AddItemToArray(a, cJSON_CreateDoubleArray(pr, (int)K));
  }
  free(probs);
  free(x);
  return srv_resp_json(res, 200, d);
}

cJSON *srv_pixels_json(const uint8_t *px) {
  int v[NN_IMAGE_SIZE];
  for (int k = 0; k < NN_IMAGE_SIZE; k++) v[k] = px[k];
  return cJSON_CreateIntArray(v, NN_IMAGE_SIZE);
}

#define EVAL_MISSES 60

/* Evaluation's running totals, fed one chunk at a time. */
typedef struct eval_acc {
  const nn_dataset *ds;
  const srv_model *m;
  uint32_t K;       /* the model's classes */
  int *conf;        /* K x K */
  uint32_t correct, misses;
  cJSON *mis;
} eval_acc;

static void eval_chunk(const float *probs, uint32_t off, uint32_t k, void *u) {
  eval_acc *a = u;
  for (uint32_t i = 0; i < k; i++) {
    const float *p = probs + (size_t)i * a->K;
    int y = a->ds->labels[off + i] < a->K ? a->ds->labels[off + i] : 0, yh = nn_argmax_n(p, a->K);
    a->conf[(size_t)y * a->K + yh]++;
    a->correct += y == yh;
    if (y == yh || a->misses >= EVAL_MISSES) continue;
    a->misses++;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", off + i);
    cJSON_AddNumberToObject(o, "label", y);
    cJSON_AddNumberToObject(o, "predicted", yh);
    cJSON_AddStringToObject(o, "label_class", model_class(a->m, y));
    cJSON_AddStringToObject(o, "predicted_class", model_class(a->m, yh));
    cJSON_AddNumberToObject(o, "confidence", round(p[yh] * 1e4) / 1e4);
    cJSON_AddItemToObject(o, "pixels",
                          srv_pixels_json(a->ds->images + (size_t)(off + i) * NN_IMAGE_SIZE));
    cJSON_AddItemToArray(a->mis, o);
  }
}

/* The evaluation document of m on its data set's test split, or NULL when
 * out of memory. */
static cJSON *evaluate(srv_model *m, const nn_dataset *ds) {
  const uint32_t K = nn_model_classes(m->m);
  float *probs = malloc(PREDICT_CHUNK * K * sizeof(float));
  nn_workspace *ws = workspace_for(m);
  eval_acc a = {.ds = ds, .m = m, .K = K, .conf = calloc((size_t)K * K, sizeof(int)),
                .mis = cJSON_CreateArray()};
  cJSON *d = cJSON_CreateObject();
  if (!probs || !ws || !a.mis || !d || !a.conf) {
    free(probs);
    free(a.conf);
    cJSON_Delete(a.mis);
    cJSON_Delete(d);
    return NULL;
  }
  int rc = predict_chunks(m, ws, ds->images, NULL, ds->n, probs, eval_chunk, &a);
  free(probs);
  if (rc) {
    free(a.conf);
    cJSON_Delete(a.mis);
    cJSON_Delete(d);
    return NULL;
  }
  cJSON_AddNumberToObject(d, "model", (double)m->id);
  cJSON_AddStringToObject(d, "dataset", m->dataset);
  cJSON_AddNumberToObject(d, "accuracy", round(1e6 * a.correct / ds->n) / 1e6);
  cJSON_AddNumberToObject(d, "images", ds->n);
  cJSON *cm = cJSON_AddArrayToObject(d, "confusion");
  for (uint32_t y = 0; y < K; y++)
    cJSON_AddItemToArray(cm, cJSON_CreateIntArray(a.conf + (size_t)y * K, (int)K));
  cJSON *cn = cJSON_AddArrayToObject(d, "classes");
  for (uint32_t y = 0; y < K; y++) cJSON_AddItemToArray(cn, cJSON_CreateString(model_class(m, (int)y)));
  free(a.conf);
  cJSON_AddItemToObject(d, "misclassified", a.mis);
  return d;
}

int h_evaluation(req *r, srv_resp *res) {
  srv_model *m = srv_models_get(r->S->models, r->id);
  if (!m) return srv_resp_error(res, 404, "model %lld not found", (long long)r->id);
  char *cached = srv_models_eval_get(r->S->models, m);
  if (cached) {
    srv_model_unref(m);
    return srv_resp_buf(res, 200, "application/json", cached, strlen(cached), 1);
  }
  const nn_dataset *ds;
  char msg[512];
  int rc = srv_data_get(r->S->data, m->dataset, NN_SPLIT_TEST, &ds, msg, sizeof msg);
  if (rc) {
    srv_model_unref(m);
    return srv_resp_error(res, rc == -ENOENT ? 404 : 500, "%s", msg);
  }
  cJSON *d = evaluate(m, ds);
  srv_data_put(r->S->data, ds);
  if (!d) {
    srv_model_unref(m);
    return srv_resp_error(res, 500, "out of memory");
  }
  char *s = cJSON_PrintUnformatted(d);
  cJSON_Delete(d);
  if (s) srv_models_eval_set(r->S->models, m, s);
  srv_model_unref(m);
  if (!s) return srv_resp_error(res, 500, "out of memory");
  return srv_resp_buf(res, 200, "application/json", s, strlen(s), 1);
}
