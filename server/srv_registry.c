/* Model registry and data-set cache. */
#include "srv_registry.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "srv_cli.h"

typedef struct entry {
  srv_model *m;
  struct entry *next;
} entry;

struct srv_models {
  pthread_mutex_t mu;       /* list and active pointer: held only briefly */
  pthread_mutex_t add_mu;   /* serialises srv_models_add (id, file, record) */
  srv_store *st;
  char dir[PATH_MAX];
  entry *list;          /* id order */
  srv_model *active;    /* holds one reference */
};

static void model_free(srv_model *m) {
  if (!m) return;
  nn_model_free(m->m);
  free(m->evaluation);
  free(m);
}

void srv_model_unref(srv_model *m) {
  if (m && atomic_fetch_sub(&m->refs, 1) == 1) model_free(m);
}

static srv_model *ref(srv_model *m) {
  if (m) atomic_fetch_add(&m->refs, 1);
  return m;
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
} load_ctx;

static int load_one(const srv_model_row *row, void *u) {
  load_ctx *c = u;
  char path[PATH_MAX + 64], msg[700];
  srv_models_path(c->r, row->id, path, sizeof path);
  nn_err err = {0};
  nn_model *nm = NULL;
  if (nn_model_load(&nm, path, &err)) {
    snprintf(msg, sizeof msg, "model %lld skipped: %s", (long long)row->id, err.msg);
    if (c->log) c->log(msg);
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
  atomic_init(&m->refs, 1);
  insert_sorted(c->r, m);
  return 0;
}

int srv_models_open(srv_models **out, srv_store *st, const char *state_dir,
                    void (*log)(const char *msg)) {
  *out = NULL;
  srv_models *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  pthread_mutex_init(&r->mu, NULL);
  pthread_mutex_init(&r->add_mu, NULL);
  r->st = st;
  snprintf(r->dir, sizeof r->dir, "%s", state_dir);
  char sub[PATH_MAX + 16];
  snprintf(sub, sizeof sub, "%s/models", state_dir);
  if (mkdir(sub, 0750) < 0 && errno != EEXIST) {
    int rc = -errno;
    free(r);
    return rc;
  }
  load_ctx c = {r, log};
  int rc = srv_store_models_each(st, load_one, &c);
  if (rc) {
    srv_models_close(r);
    return rc;
  }
  char buf[32];
  int64_t want = 0;
  if (srv_store_setting_get(st, "active_model", buf, sizeof buf) == 0) want = atoll(buf);
  srv_model *newest = NULL;
  for (entry *e = r->list; e; e = e->next) {
    if (e->m->id == want) r->active = ref(e->m);
    newest = e->m;
  }
  if (!r->active && newest) {
    if (want && log) {
      char msg[128];
      snprintf(msg, sizeof msg, "active model %lld is unavailable; activating model %lld",
               (long long)want, (long long)newest->id);
      log(msg);
    }
    r->active = ref(newest);
  }
  *out = r;
  return 0;
}

void srv_models_close(srv_models *r) {
  if (!r) return;
  srv_model_unref(r->active);
  for (entry *e = r->list, *n; e; e = n) {
    n = e->next;
    srv_model_unref(e->m);
    free(e);
  }
  pthread_mutex_destroy(&r->add_mu);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

srv_model *srv_models_get(srv_models *r, int64_t id) {
  srv_model *m = NULL;
  pthread_mutex_lock(&r->mu);
  for (entry *e = r->list; e; e = e->next)
    if (e->m->id == id) m = ref(e->m);
  pthread_mutex_unlock(&r->mu);
  return m;
}

srv_model *srv_models_active(srv_models *r) {
  pthread_mutex_lock(&r->mu);
  srv_model *m = ref(r->active);
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

static int activate_locked(srv_models *r, srv_model *m) {
  char buf[32];
  snprintf(buf, sizeof buf, "%lld", (long long)m->id);
  int rc = srv_store_setting_set(r->st, "active_model", buf);
  if (rc) return rc;
  srv_model *old = r->active;
  r->active = ref(m);
  srv_model_unref(old);
  return 0;
}

int srv_models_activate(srv_models *r, int64_t id) {
  pthread_mutex_lock(&r->mu);
  int rc = -ENOENT;
  for (entry *e = r->list; e; e = e->next)
    if (e->m->id == id) rc = activate_locked(r, e->m);
  pthread_mutex_unlock(&r->mu);
  return rc;
}

int srv_models_delete(srv_models *r, int64_t id) {
  pthread_mutex_lock(&r->mu);
  int rc = -ENOENT;
  entry **pp = &r->list;
  while (*pp && (*pp)->m->id != id) pp = &(*pp)->next;
  if (*pp) {
    if ((*pp)->m == r->active) {
      rc = -EBUSY;
    } else if ((rc = srv_store_model_delete(r->st, id)) == 0) {
      entry *e = *pp;
      *pp = e->next;
      char path[PATH_MAX + 64];
      srv_models_path(r, id, path, sizeof path);
      unlink(path);
      srv_model_unref(e->m);
      free(e);
    }
  }
  pthread_mutex_unlock(&r->mu);
  return rc;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int srv_models_add(srv_models *r, nn_model *nm, const char *dataset, double acc, double loss,
                   int64_t job_id, const srv_job_row *job, int64_t *out_id, char *msg,
                   size_t msglen) {
  srv_model *m = calloc(1, sizeof *m);
  if (!m) return -ENOMEM;
  /* Ids are handed out under add_mu, so concurrent jobs cannot write the
   * same file name; predictions (which take mu) never wait for the fsync. */
  pthread_mutex_lock(&r->add_mu);
  int64_t id = 0;
  int rc = srv_store_model_next_id(r->st, &id);
  if (rc) {
    snprintf(msg, msglen, "database error: %s", srv_store_errmsg(r->st));
    goto fail;
  }
  char path[PATH_MAX + 64];
  srv_models_path(r, id, path, sizeof path);
  nn_err err = {0};
  if ((rc = nn_model_save(nm, path, &err))) {
    snprintf(msg, msglen, "could not save the model: %s", err.msg);
    goto fail;
  }
  srv_model_row row = {id, nm->arch, dataset, nm->n_params, acc, loss, job_id, now_ms()};
  int64_t got = 0;
  if ((rc = srv_store_model_insert(r->st, &row, job, &got))) {
    snprintf(msg, msglen, "database error while recording the model: %s",
             srv_store_errmsg(r->st));
    unlink(path);
    goto fail;
  }
  struct stat sb;
  m->file_bytes = stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
  m->id = got;
  m->m = nm;
  snprintf(m->arch, sizeof m->arch, "%s", nm->arch);
  snprintf(m->dataset, sizeof m->dataset, "%s", dataset);
  m->test_accuracy = acc;
  m->test_loss = loss;
  m->job_id = job_id;
  m->created_ms = row.created_ms;
  atomic_init(&m->refs, 1);
  pthread_mutex_lock(&r->mu);
  insert_sorted(r, m);
  pthread_mutex_unlock(&r->mu);
  pthread_mutex_unlock(&r->add_mu);
  *out_id = got;
  return 0;
fail:
  pthread_mutex_unlock(&r->add_mu);
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

/* ---------------------------------------------------------------- data */

typedef struct slot {
  char name[32];
  nn_split split;
  nn_dataset ds;
  int refs;
  struct slot *next;
} slot;

struct srv_data {
  pthread_mutex_t mu;
  char dir[PATH_MAX];
  slot *slots;
};

int srv_data_open(srv_data **out, const char *data_dir) {
  srv_data *d = calloc(1, sizeof *d);
  if (!d) return -ENOMEM;
  pthread_mutex_init(&d->mu, NULL);
  snprintf(d->dir, sizeof d->dir, "%s", data_dir);
  *out = d;
  return 0;
}

void srv_data_close(srv_data *d) {
  if (!d) return;
  for (slot *s = d->slots, *n; s; s = n) {
    n = s->next;
    nn_dataset_free(&s->ds);
    free(s);
  }
  pthread_mutex_destroy(&d->mu);
  free(d);
}

int srv_data_get(srv_data *d, const char *name, nn_split split, const nn_dataset **ds,
                 char *msg, size_t msglen) {
  pthread_mutex_lock(&d->mu);
  slot *s = d->slots;
  while (s && (strcmp(s->name, name) || s->split != split)) s = s->next;
  int rc = 0;
  if (!s) {
    char dir[PATH_MAX + 64];
    if (srv_dataset_dir(d->dir, name, dir, sizeof dir)) {
      snprintf(msg, msglen, "data set %s not found under %s", name, d->dir);
      rc = -ENOENT;
      goto out;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
      rc = -ENOMEM;
      goto out;
    }
    nn_err err = {0};
    /* Loading under the lock keeps two jobs from reading the same 47 MB
     * twice; it takes a fraction of a second. */
    if ((rc = nn_dataset_load_dir(&s->ds, dir, split, &err))) {
      snprintf(msg, msglen, "%s", err.msg);
      free(s);
      goto out;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    s->split = split;
    s->next = d->slots;
    d->slots = s;
  }
  s->refs++;
  *ds = &s->ds;
out:
  pthread_mutex_unlock(&d->mu);
  return rc;
}

void srv_data_put(srv_data *d, const char *name, nn_split split) {
  pthread_mutex_lock(&d->mu);
  for (slot **pp = &d->slots; *pp; pp = &(*pp)->next) {
    slot *s = *pp;
    if (strcmp(s->name, name) || s->split != split) continue;
    if (--s->refs == 0 && split == NN_SPLIT_TRAIN) {
      *pp = s->next;
      nn_dataset_free(&s->ds);
      free(s);
    }
    break;
  }
  pthread_mutex_unlock(&d->mu);
}

/* Reads the count from an IDX header (plain or gzip). */
static int idx_count(const char *dir, const char *file, uint32_t *n) {
  char p[PATH_MAX + 128];
  snprintf(p, sizeof p, "%s/%s", dir, file);
  gzFile f = gzopen(p, "rb");
  if (!f) {
    snprintf(p, sizeof p, "%s/%s.gz", dir, file);
    if (!(f = gzopen(p, "rb"))) return -ENOENT;
  }
  unsigned char h[8];
  int got = gzread(f, h, 8);
  gzclose(f);
  if (got != 8) return -EINVAL;
  *n = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
  return 0;
}

int srv_data_count(srv_data *d, const char *name, uint32_t *train, uint32_t *test) {
  char dir[PATH_MAX + 64];
  if (srv_dataset_dir(d->dir, name, dir, sizeof dir)) return -ENOENT;
  int rc = idx_count(dir, "train-labels-idx1-ubyte", train);
  if (!rc) rc = idx_count(dir, "t10k-labels-idx1-ubyte", test);
  return rc;
}
