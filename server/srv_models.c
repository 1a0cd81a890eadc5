/* Model registry and data-set cache. */
#include "srv_models.h"
#include "srv_util.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "srv_datasets.h"

typedef struct entry {
  srv_model *m;
  struct entry *next;
} entry;

struct srv_models {
  pthread_mutex_t mu;       /* list and active pointer: held only briefly */
  pthread_mutex_t wr_mu;    /* serialises every change: add, activate, delete */
  int recovered;            /* models registered again from disk at open */
  srv_store *st;
  char dir[PATH_MAX];
  entry *list;          /* id order */
  srv_model *active;    /* holds one reference */
  void (*notify)(void *u, int64_t id); /* after the active model changed */
  void *notify_u;
};

static void model_free(srv_model *m) {
  if (!m) return;
  free(m->classes);
  nn_model_free(m->m);
  free(m->evaluation);
  free(m);
}

void srv_model_unref(srv_model *m) {
  if (m && atomic_fetch_sub(&m->refs, 1) == 1) model_free(m);
}

srv_model *srv_model_ref(srv_model *m) {
  if (m) atomic_fetch_add(&m->refs, 1);
  return m;
}

/* A model's class names: the recorded ones when they fit its output
 * layer, else the built-in set's, else "0".."k-1". */
static int set_classes(srv_model *m, char *const *names, uint32_t n) {
  uint32_t k = nn_model_classes(m->m);
  char num[NN_MAX_CLASSES][12], *v[NN_MAX_CLASSES];
  if (!names || n != k) {
    const char *const *b = srv_dataset_builtin_classes(m->dataset);
    for (uint32_t i = 0; i < k; i++) {
      snprintf(num[i], sizeof num[i], "%u", i);
      v[i] = k == NN_CLASSES && srv_dataset_is_builtin(m->dataset) ? (char *)b[i] : num[i];
    }
    names = v;
  }
  if (!(m->classes = srv_names_pack((const char *const *)names, k))) return -ENOMEM;
  m->n_classes = k;
  return 0;
}

/* Reads ID.json (NULL if absent or unreadable). */
static cJSON *meta_read(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  char *buf = malloc(1 << 16);
  size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
  fclose(f);
  if (!buf) return NULL;
  buf[n] = 0;
  cJSON *o = cJSON_Parse(buf);
  free(buf);
  return o;
}

static int classes_from_meta(srv_model *m, const cJSON *meta) {
  const cJSON *c = cJSON_GetObjectItemCaseSensitive(meta, "classes");
  char *v[NN_MAX_CLASSES];
  uint32_t n = 0;
  if (cJSON_IsArray(c) && cJSON_GetArraySize(c) <= NN_MAX_CLASSES) {
    const cJSON *it;
    cJSON_ArrayForEach(it, c) {
      if (!cJSON_IsString(it)) break;
      v[n++] = it->valuestring;
    }
  }
  return set_classes(m, n ? v : NULL, n);
}

void srv_models_path(srv_models *r, int64_t id, char *buf, size_t len) {
  snprintf(buf, len, "%s/models/%lld.model", r->dir, (long long)id);
}

static void insert_sorted(srv_models *r, srv_model *m) {
  entry *e = malloc(sizeof *e);
  if (!e) return;
  e->m = m; /* the list's reference */
  entry **pp = &r->list;
  while (*pp && (*pp)->m->id < m->id) pp = &(*pp)->next;
  e->next = *pp;
  *pp = e;
}

typedef struct load_ctx {
  srv_models *r;
  void (*log)(const char *);
  int64_t *ids;              /* every recorded id, loaded or skipped */
  size_t n_ids, cap_ids;
  int oom;
} load_ctx;

int srv_model_usable(const nn_model *nm, char *why, size_t len) {
  uint32_t k = nn_model_classes(nm);
  if (nm->n_inputs != NN_IMAGE_SIZE) {
    snprintf(why, len, "its input is %u values, not a 28x28 image (%d): this daemon cannot predict with it",
             nm->n_inputs, NN_IMAGE_SIZE);
    return -EINVAL;
  }
  if (k < 2 || k > NN_MAX_CLASSES) {
    snprintf(why, len, "it has %u outputs (2 to %d allowed)", k, NN_MAX_CLASSES);
    return -EINVAL;
  }
  return 0;
}

static int load_one(const srv_model_row *row, void *u) {
  load_ctx *c = u;
  if (c->n_ids == c->cap_ids) {
    size_t cap = c->cap_ids ? 2 * c->cap_ids : 64;
    int64_t *v = realloc(c->ids, cap * sizeof *v);
    if (v) c->ids = v, c->cap_ids = cap;
  }
  if (c->n_ids < c->cap_ids) c->ids[c->n_ids++] = row->id;
  else c->oom = 1;
  char path[PATH_MAX + 64], msg[700], why[160];
  srv_models_path(c->r, row->id, path, sizeof path);
  nn_err err = {0};
  nn_model *nm = NULL;
  if (nn_model_load(&nm, path, &err)) {
    snprintf(msg, sizeof msg, "model %lld skipped: %s", (long long)row->id, err.msg);
    if (c->log) c->log(msg);
    return 0;
  }
  if (srv_model_usable(nm, why, sizeof why)) {
    snprintf(msg, sizeof msg, "model %lld skipped: %s", (long long)row->id, why);
    if (c->log) c->log(msg);
    nn_model_free(nm);
    return 0;
  }
  srv_model *m = calloc(1, sizeof *m);
  if (!m) {
    nn_model_free(nm);
    return 0;
  }
  struct stat sb;
  m->file_bytes = stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
  m->id = row->id;
  m->m = nm;
  snprintf(m->arch, sizeof m->arch, "%s", row->arch);
  snprintf(m->dataset, sizeof m->dataset, "%s", row->dataset);
  m->test_accuracy = row->test_accuracy;
  m->test_loss = row->test_loss;
  m->job_id = row->job_id;
  m->created_ms = row->created_ms;
  char mp[PATH_MAX + 64];
  snprintf(mp, sizeof mp, "%s/models/%lld.json", c->r->dir, (long long)row->id);
  cJSON *meta = meta_read(mp);
  int rc = classes_from_meta(m, meta);
  cJSON_Delete(meta);
  if (rc) {
    model_free(m);
    return 0;
  }
  atomic_init(&m->refs, 1);
  insert_sorted(c->r, m);
  return 0;
}

static void meta_path(srv_models *r, int64_t id, char *buf, size_t len) {
  snprintf(buf, len, "%s/models/%lld.json", r->dir, (long long)id);
}

static char *meta_json(const srv_model_row *row, char *const *classes, uint32_t n) {
  cJSON *o = cJSON_CreateObject();
  if (classes) {
    cJSON *a = cJSON_AddArrayToObject(o, "classes");
    for (uint32_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(classes[i]));
  }
  cJSON_AddNumberToObject(o, "id", (double)row->id);
  cJSON_AddStringToObject(o, "arch", row->arch);
  cJSON_AddStringToObject(o, "dataset", row->dataset);
  cJSON_AddNumberToObject(o, "test_accuracy", row->test_accuracy);
  cJSON_AddNumberToObject(o, "test_loss", row->test_loss);
  cJSON_AddNumberToObject(o, "job_id", (double)row->job_id);
  cJSON_AddNumberToObject(o, "created_ms", (double)row->created_ms);
  char *s = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return s;
}

static void logm(void (*log)(const char *), const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void logm(void (*log)(const char *), const char *fmt, ...) {
  if (!log) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  log(buf);
}

static int parse_id(const char *name, const char *suffix, int64_t *id) {
  char *end;
  if (name[0] < '1' || name[0] > '9') return -1;
  errno = 0;
  long long v = strtoll(name, &end, 10);
  if (errno || strcmp(end, suffix)) return -1;
  *id = v;
  return 0;
}

static double meta_num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : NAN;
}

/* One model file of a fresh database: registered from its own contents
 * and its metadata file (if any). */
static void recover_one(srv_models *r, int64_t id, void (*log)(const char *)) {
  char path[PATH_MAX + 64], mp[PATH_MAX + 64];
  srv_models_path(r, id, path, sizeof path);
  nn_err err = {0};
  nn_model *nm = NULL;
  if (nn_model_load(&nm, path, &err)) {
    logm(log, "DATABASE RECOVERY: %s not registered: %s", path, err.msg);
    return;
  }
  struct stat sb;
  int64_t mtime = stat(path, &sb) == 0 ? (int64_t)sb.st_mtime * 1000 : 0;
  srv_model_row row = {id, nm->arch, "mnist", nm->n_params, NAN, NAN, 0, mtime};
  char dataset[72] = "mnist";
  meta_path(r, id, mp, sizeof mp);
  cJSON *meta = meta_read(mp);
  const cJSON *ds = cJSON_GetObjectItemCaseSensitive(meta, "dataset");
  if (cJSON_IsString(ds) && srv_dataset_name_ok(ds->valuestring) &&
      strlen(ds->valuestring) < sizeof dataset)
    snprintf(dataset, sizeof dataset, "%s", ds->valuestring);
  row.dataset = dataset;
  if (meta) {
    row.test_accuracy = meta_num(meta, "test_accuracy");
    row.test_loss = meta_num(meta, "test_loss");
    double jid = meta_num(meta, "job_id"), cms = meta_num(meta, "created_ms");
    if (jid >= 1 && jid < 9e15) row.job_id = (int64_t)jid;
    if (cms >= 0 && cms < 9e15) row.created_ms = (int64_t)cms;
  }
  int rc = srv_store_model_recover(r->st, &row);
  if (rc) {
    logm(log, "DATABASE RECOVERY: model %lld could not be recorded: %s", (long long)id,
         srv_store_errmsg(r->st));
  } else {
    r->recovered++;
    logm(log, "DATABASE RECOVERY: registered model %lld from %s (%s, %s, test accuracy %s)",
         (long long)id, path, nm->arch, dataset,
         isfinite(row.test_accuracy) ? "from its metadata" : "unknown: no metadata");
  }
  cJSON_Delete(meta);
  nn_model_free(nm);
}

/* A fresh database beside existing model files: register them again. */
static void recover_models(srv_models *r, void (*log)(const char *)) {
  char sub[PATH_MAX + 16];
  snprintf(sub, sizeof sub, "%s/models", r->dir);
  DIR *d = opendir(sub);
  if (!d) return;
  int64_t *ids = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    int64_t id;
    if (parse_id(de->d_name, ".model", &id)) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      int64_t *v = realloc(ids, cap * sizeof *v);
      if (!v) break;
      ids = v;
    }
    ids[n++] = id;
  }
  closedir(d);
  /* Id order, so the newest ends up active and the log reads naturally. */
  for (size_t i = 1; i < n; i++)
    for (size_t k = i; k > 0 && ids[k - 1] > ids[k]; k--) {
      int64_t t = ids[k];
      ids[k] = ids[k - 1];
      ids[k - 1] = t;
    }
  for (size_t i = 0; i < n; i++) recover_one(r, ids[i], log);
  free(ids);
}

/* The id of a model's file (ID.model) or metadata (ID.json). Temporary
 * files are srv_jobs' to remove (clean_orphans). */
static int owned_id(const char *name, int64_t *id) {
  return parse_id(name, ".model", id) && parse_id(name, ".json", id) ? -1 : 0;
}

/* Files of models the database does not record: a delete that committed
 * but was killed before its unlinks, an add killed between writing its
 * files and committing (its job then resumes or ends interrupted: that
 * model was never finished). Left alone they take disk space forever, and
 * a later database loss would bring deleted models back (recover_models).
 * The daemon holds the state directory's lock, so no writer is half-way
 * through. Returns how many it removed. */
static int sweep_orphans(srv_models *r, const load_ctx *c) {
  char sub[PATH_MAX + 16], path[PATH_MAX + 300], msg[PATH_MAX + 400];
  snprintf(sub, sizeof sub, "%s/models", r->dir);
  DIR *d = opendir(sub);
  if (!d) return 0;
  int removed = 0;
  for (struct dirent *de; (de = readdir(d));) {
    int64_t id;
    if (owned_id(de->d_name, &id)) continue;
    int known = 0;
    for (size_t i = 0; i < c->n_ids && !known; i++) known = c->ids[i] == id;
    if (known) continue;
    snprintf(path, sizeof path, "%s/%s", sub, de->d_name);
    if (unlink(path) == 0) {
      removed++;
      snprintf(msg, sizeof msg,
               "removed %s: no model %lld is recorded (an interrupted delete or add)", path,
               (long long)id);
    } else {
      snprintf(msg, sizeof msg, "could not remove %s (%s), which no model uses", path,
               strerror(errno));
    }
    if (c->log) c->log(msg);
  }
  closedir(d);
  if (removed) srv_fsync_dir(sub);
  return removed;
}

int srv_models_open(srv_models **out, srv_store *st, const char *state_dir,
                    void (*log)(const char *msg)) {
  *out = NULL;
  srv_models *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  pthread_mutex_init(&r->mu, NULL);
  pthread_mutex_init(&r->wr_mu, NULL);
  r->st = st;
  snprintf(r->dir, sizeof r->dir, "%s", state_dir);
  char sub[PATH_MAX + 16];
  snprintf(sub, sizeof sub, "%s/models", state_dir);
  int rc = srv_mkdir_durable(sub, 0750);
  if (rc) {
    srv_models_close(r);
    return rc;
  }
  const int fresh = srv_store_fresh(st);
  if (fresh) recover_models(r, log);
  load_ctx c = {r, log, NULL, 0, 0, 0};
  rc = srv_store_models_each(st, load_one, &c);
  if (rc) {
    free(c.ids);
    srv_models_close(r);
    return rc;
  }
  /* A fresh database got its rows from these files just now; without the
   * full list of ids nothing can be called an orphan. */
  if (!fresh && !c.oom) sweep_orphans(r, &c);
  free(c.ids);
  char buf[32];
  int64_t want = 0;
  if (srv_store_setting_get(st, "active_model", buf, sizeof buf) == 0) want = atoll(buf);
  srv_model *newest = NULL;
  for (entry *e = r->list; e; e = e->next) {
    if (e->m->id == want) r->active = srv_model_ref(e->m);
    newest = e->m;
  }
  if (!r->active && newest) {
    if (want && log) {
      char msg[128];
      snprintf(msg, sizeof msg, "active model %lld is unavailable; activating model %lld",
               (long long)want, (long long)newest->id);
      log(msg);
    }
    r->active = srv_model_ref(newest);
  }
  *out = r;
  return 0;
}

int srv_models_recovered(srv_models *r) { return r ? r->recovered : 0; }

void srv_models_close(srv_models *r) {
  if (!r) return;
  srv_model_unref(r->active);
  for (entry *e = r->list, *n; e; e = n) {
    n = e->next;
    srv_model_unref(e->m);
    free(e);
  }
  pthread_mutex_destroy(&r->wr_mu);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

srv_model *srv_models_get(srv_models *r, int64_t id) {
  srv_model *m = NULL;
  pthread_mutex_lock(&r->mu);
  for (entry *e = r->list; e; e = e->next)
    if (e->m->id == id) m = srv_model_ref(e->m);
  pthread_mutex_unlock(&r->mu);
  return m;
}

srv_model *srv_models_active(srv_models *r) {
  pthread_mutex_lock(&r->mu);
  srv_model *m = srv_model_ref(r->active);
  pthread_mutex_unlock(&r->mu);
  return m;
}

int64_t srv_models_active_id(srv_models *r) {
  pthread_mutex_lock(&r->mu);
  int64_t id = r->active ? r->active->id : 0;
  pthread_mutex_unlock(&r->mu);
  return id;
}

void srv_models_each(srv_models *r, void (*cb)(const srv_model *, int, void *), void *u) {
  pthread_mutex_lock(&r->mu);
  for (entry *e = r->list; e; e = e->next) cb(e->m, e->m == r->active, u);
  pthread_mutex_unlock(&r->mu);
}

/* Swaps the active pointer (caller holds wr_mu, not mu). */
static void set_active(srv_models *r, srv_model *m) {
  pthread_mutex_lock(&r->mu);
  srv_model *old = r->active;
  r->active = srv_model_ref(m);
  pthread_mutex_unlock(&r->mu);
  srv_model_unref(old);
  if (r->notify && (!old || old != m)) r->notify(r->notify_u, m->id);
}

void srv_models_set_notify(srv_models *r, void (*cb)(void *u, int64_t id), void *u) {
  r->notify = cb;
  r->notify_u = u;
}

int srv_models_open_replica(srv_models **out) {
  *out = NULL;
  srv_models *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  pthread_mutex_init(&r->mu, NULL);
  pthread_mutex_init(&r->wr_mu, NULL);
  *out = r;
  return 0;
}

int srv_models_install(srv_models *r, const srv_model_info *info, nn_model *nm) {
  char why[160];
  if (r->st) return -EPERM;
  if (srv_model_usable(nm, why, sizeof why)) return -EINVAL;
  srv_model *m = calloc(1, sizeof *m);
  entry *e = malloc(sizeof *e);
  if (!m || !e) {
    free(m);
    free(e);
    return -ENOMEM;
  }
  m->id = info->id;
  m->m = nm;
  snprintf(m->arch, sizeof m->arch, "%s", nm->arch);
  snprintf(m->dataset, sizeof m->dataset, "%s", info->dataset);
  m->test_accuracy = info->test_accuracy;
  m->test_loss = info->test_loss;
  m->job_id = info->job_id;
  m->created_ms = info->created_ms;
  m->file_bytes = info->file_bytes;
  /* The primary's names (an uploaded set's travel in the model's JSON). */
  if (set_classes(m, info->classes, info->n_classes)) {
    free(m);
    free(e);
    return -ENOMEM;
  }
  atomic_init(&m->refs, 1);
  e->m = m; /* the list's reference */
  e->next = NULL;
  pthread_mutex_lock(&r->wr_mu);
  pthread_mutex_lock(&r->mu);
  entry *old = r->list;
  r->list = e;
  pthread_mutex_unlock(&r->mu);
  set_active(r, m); /* the activation's hot swap */
  pthread_mutex_unlock(&r->wr_mu);
  for (entry *n; old; old = n) {
    n = old->next;
    srv_model_unref(old->m);
    free(old);
  }
  return 0;
}

int srv_models_activate(srv_models *r, int64_t id) {
  pthread_mutex_lock(&r->wr_mu);
  srv_model *m = srv_models_get(r, id);
  int rc = -ENOENT;
  if (m) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)id);
    /* The record first: a failure leaves memory and records agreeing. */
    rc = srv_store_setting_set(r->st, "active_model", buf);
    if (!rc) set_active(r, m);
    srv_model_unref(m);
  }
  pthread_mutex_unlock(&r->wr_mu);
  return rc;
}

int srv_models_delete(srv_models *r, int64_t id) {
  pthread_mutex_lock(&r->wr_mu);
  /* The active model only changes under wr_mu: this answer holds. */
  pthread_mutex_lock(&r->mu);
  entry *e = r->list;
  while (e && e->m->id != id) e = e->next;
  int rc = !e ? -ENOENT : e->m == r->active ? -EBUSY : 0;
  pthread_mutex_unlock(&r->mu);
  if (!rc && (rc = srv_store_model_delete(r->st, id)) == 0) {
    pthread_mutex_lock(&r->mu);
    entry **pp = &r->list;
    while (*pp && (*pp)->m->id != id) pp = &(*pp)->next;
    e = *pp;
    if (e) *pp = e->next;
    pthread_mutex_unlock(&r->mu);
    /* The record is gone, so the model is; files a crash leaves here go
     * at the next start (sweep_orphans). */
    srv_crash_point("model_deleted");
    char path[PATH_MAX + 64];
    srv_models_path(r, id, path, sizeof path);
    unlink(path);
    meta_path(r, id, path, sizeof path);
    unlink(path);
    snprintf(path, sizeof path, "%s/models", r->dir);
    srv_fsync_dir(path);
    if (e) {
      srv_model_unref(e->m);
      free(e);
    }
  }
  pthread_mutex_unlock(&r->wr_mu);
  return rc;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The activation decision; caller holds wr_mu, so the active model cannot
 * change until the decision is recorded. */
static int should_activate(srv_models *r, srv_activate mode, const char *dataset, double acc) {
  if (mode == SRV_ACTIVATE_ALWAYS) return 1;
  if (mode != SRV_ACTIVATE_IF_BETTER) return 0;
  srv_model *cur = srv_models_active(r);
  int yes = !cur || strcmp(cur->dataset, dataset) || !isfinite(cur->test_accuracy) ||
            acc > cur->test_accuracy;
  srv_model_unref(cur);
  return yes;
}

int srv_models_add(srv_models *r, nn_model *nm, const char *dataset, double acc, double loss,
                   int64_t job_id, const srv_model_finish *fin, int64_t *out_id,
                   int *activated, char *msg, size_t msglen) {
  *activated = 0;
  if (!isfinite(acc) || !isfinite(loss)) {
    snprintf(msg, msglen, "the evaluation gave no number (accuracy %g, loss %g)", acc, loss);
    return -EINVAL;
  }
  char why[160];
  if (srv_model_usable(nm, why, sizeof why)) {
    snprintf(msg, msglen, "the trained model cannot be served: %s", why);
    return -EINVAL;
  }
  srv_model *m = calloc(1, sizeof *m);
  if (!m) return -ENOMEM;
  char path[PATH_MAX + 64], mp[PATH_MAX + 64];
  char *meta = NULL;
  srv_event_row ev[4];
  size_t n_ev = 0;
  pthread_mutex_lock(&r->wr_mu);
  int64_t id = 0;
  int rc = srv_store_model_next_id(r->st, &id);
  if (rc) {
    snprintf(msg, msglen, "database error: %s", srv_store_errmsg(r->st));
    goto fail;
  }
  srv_models_path(r, id, path, sizeof path);
  meta_path(r, id, mp, sizeof mp);
  nn_err err = {0};
  if ((rc = nn_model_save(nm, path, &err))) {
    snprintf(msg, msglen, "could not save the model: %s", err.msg);
    goto fail;
  }
  srv_crash_point("model_saved");
  srv_model_row row = {id, nm->arch, dataset, nm->n_params, acc, loss, job_id, now_ms()};
  if (!(meta = meta_json(&row, fin ? fin->classes : NULL, fin ? fin->n_classes : 0))) {
    rc = -ENOMEM;
  } else if ((rc = nn_file_write_atomic(mp, meta, strlen(meta), &err)) == 0) {
    int act = should_activate(r, fin ? fin->activate : SRV_ACTIVATE_NEVER, dataset, acc);
    if (fin && fin->events && fin->events(fin->u, id, act, ev, &n_ev)) rc = -ENOMEM;
    int64_t got = 0;
    if (!rc && (rc = srv_store_model_insert(r->st, &row, fin ? fin->job : NULL, ev, n_ev, act,
                                            &got)) == 0) {
      srv_crash_point("model_committed");
      id = got;
      *activated = act;
    }
  }
  if (rc) {
    snprintf(msg, msglen, "%s while recording the model: %s",
             rc == -ENOSPC ? "the disk is full" : "database error",
             rc == -ENOSPC || rc == -ENOMEM ? strerror(-rc) : srv_store_errmsg(r->st));
    unlink(path);
    unlink(mp);
    goto fail;
  }
  struct stat sb;
  m->file_bytes = stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
  m->id = id;
  m->m = nm;
  snprintf(m->arch, sizeof m->arch, "%s", nm->arch);
  snprintf(m->dataset, sizeof m->dataset, "%s", dataset);
  m->test_accuracy = acc;
  m->test_loss = loss;
  m->job_id = job_id;
  m->created_ms = row.created_ms;
  if (set_classes(m, fin ? fin->classes : NULL, fin ? fin->n_classes : 0)) {
    /* The model is recorded; it loads with its names at the next start. */
    m->classes = NULL;
    m->n_classes = 0;
  }
  atomic_init(&m->refs, 1);
  pthread_mutex_lock(&r->mu);
  insert_sorted(r, m);
  pthread_mutex_unlock(&r->mu);
  if (*activated) set_active(r, m);
  pthread_mutex_unlock(&r->wr_mu);
  free(meta);
  *out_id = id;
  return 0;
fail:
  pthread_mutex_unlock(&r->wr_mu);
  free(meta);
  free(m);
  return rc;
}

char *srv_models_eval_get(srv_models *r, srv_model *m) {
  pthread_mutex_lock(&r->mu);
  char *s = m->evaluation ? strdup(m->evaluation) : NULL;
  pthread_mutex_unlock(&r->mu);
  return s;
}

void srv_models_eval_set(srv_models *r, srv_model *m, const char *json) {
  pthread_mutex_lock(&r->mu);
  if (!m->evaluation) m->evaluation = strdup(json);
  pthread_mutex_unlock(&r->mu);
}

