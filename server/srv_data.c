/* The data-set cache: each split loaded on first use, reference counted. */
#include "srv_data.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srv_datasets.h"
#include "srv_util.h"

typedef struct slot {
  char name[72];
  char sha[65];       /* an uploaded set's checksum ("" built in): the key */
  nn_split split;
  nn_dataset ds;
  int refs;
  int loading;        /* being read, outside the lock; others wait */
  int dead;           /* its set was deleted: freed at its last put */
  struct slot *next;
} slot;

struct srv_data {
  pthread_mutex_t mu;    /* nothing else is taken under it (lock order: srv_jobs.c) */
  pthread_cond_t loaded; /* a slot finished loading */
  char dir[PATH_MAX];
  slot *slots;
  srv_datasets *up;   /* uploaded sets, or NULL */
};

void srv_data_attach(srv_data *d, srv_datasets *up) { d->up = up; }

int srv_data_classes(srv_data *d, const char *name, char ***names, uint32_t *n) {
  if (!srv_dataset_is_builtin(name))
    return d->up ? srv_datasets_classes(d->up, name, names, n) : -ENOENT;
  if (!(*names = srv_names_pack(srv_dataset_builtin_classes(name), NN_CLASSES))) return -ENOMEM;
  *n = NN_CLASSES;
  return 0;
}

static void slot_unlink(srv_data *d, slot *s) {
  for (slot **pp = &d->slots; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
}

static void slot_free(slot *s) {
  nn_dataset_free(&s->ds);
  free(s);
}

/* Caller holds d->mu. Slots of the name that nobody holds go now; held
 * ones are marked and go at their last put. */
static void forget_locked(srv_data *d, const char *name) {
  for (slot **pp = &d->slots; *pp;) {
    slot *s = *pp;
    if (strcmp(s->name, name)) {
      pp = &s->next;
      continue;
    }
    s->dead = 1;
    if (s->refs) {
      pp = &s->next;
      continue;
    }
    *pp = s->next;
    slot_free(s);
  }
}

void srv_data_forget(srv_data *d, const char *name) {
  pthread_mutex_lock(&d->mu);
  forget_locked(d, name);
  pthread_mutex_unlock(&d->mu);
}

int srv_data_delete_begin(srv_data *d, const char *name) {
  if (srv_dataset_is_builtin(name) || !d->up) return -ENOENT;
  return srv_datasets_delete_begin(d->up, name);
}

int srv_data_delete_finish(srv_data *d, const char *name) {
  int rc = srv_datasets_delete_finish(d->up, name);
  if (!rc) srv_data_forget(d, name);
  return rc;
}

int srv_data_delete(srv_data *d, const char *name) {
  int rc = srv_data_delete_begin(d, name);
  return rc ? rc : srv_data_delete_finish(d, name);
}

int srv_data_open(srv_data **out, const char *data_dir) {
  srv_data *d = calloc(1, sizeof *d);
  if (!d) return -ENOMEM;
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->loaded, NULL);
  snprintf(d->dir, sizeof d->dir, "%s", data_dir);
  *out = d;
  return 0;
}

void srv_data_close(srv_data *d) {
  if (!d) return;
  for (slot *s = d->slots, *n; s; s = n) {
    n = s->next;
    slot_free(s);
  }
  pthread_cond_destroy(&d->loaded);
  pthread_mutex_destroy(&d->mu);
  free(d);
}

/* Reads one split (no lock held): a built-in set from its IDX files, an
 * uploaded one from its file; sha receives the checksum it was checked
 * against (the one the slot is then kept under). */
static int load_split(srv_data *d, const char *name, nn_split split, nn_dataset *ds,
                      char sha[65], char *msg, size_t msglen) {
  if (!srv_dataset_is_builtin(name)) return srv_datasets_load(d->up, name, split, ds, sha, msg, msglen);
  char dir[PATH_MAX + 64];
  if (srv_dataset_dir(d->dir, name, dir, sizeof dir)) {
    snprintf(msg, msglen, "data set %s not found under %s", name, d->dir);
    return -ENOENT;
  }
  nn_err err = {0};
  int rc = nn_dataset_load_dir(ds, dir, split, &err);
  if (rc) snprintf(msg, msglen, "%s", err.msg);
  sha[0] = 0;
  return rc;
}

/* The slot of (name, split) under the set's current checksum; slots under
 * another checksum (a deleted set's, replaced by an upload of the same
 * name) never match, and go once nobody holds them. Caller holds d->mu. */
static slot *lookup(srv_data *d, const char *name, nn_split split, const char *sha) {
  slot *hit = NULL;
  for (slot **pp = &d->slots; *pp;) {
    slot *s = *pp;
    if (strcmp(s->name, name) || s->split != split) {
      pp = &s->next;
    } else if (!s->dead && (s->loading || !strcmp(s->sha, sha))) {
      hit = s;
      pp = &s->next;
    } else if (!s->refs && !s->loading) {
      *pp = s->next;
      slot_free(s);
    } else {
      pp = &s->next;
    }
  }
  return hit;
}

int srv_data_get(srv_data *d, const char *name, nn_split split, const nn_dataset **ds,
                 char *msg, size_t msglen) {
  char sha[65] = "";
  int up = !srv_dataset_is_builtin(name);
  if (up && (!d->up || srv_datasets_sha(d->up, name, sha))) {
    snprintf(msg, msglen, "data set %s not found", name);
    return -ENOENT;
  }
  pthread_mutex_lock(&d->mu);
  slot *s;
  /* One reader per split: the others wait for it rather than read the
   * same file again. */
  while ((s = lookup(d, name, split, sha)) && s->loading) pthread_cond_wait(&d->loaded, &d->mu);
  if (s) {
    s->refs++;
    *ds = &s->ds;
    pthread_mutex_unlock(&d->mu);
    return 0;
  }
  if (!(s = calloc(1, sizeof *s))) {
    pthread_mutex_unlock(&d->mu);
    snprintf(msg, msglen, "out of memory loading data set %s", name);
    return -ENOMEM;
  }
  snprintf(s->name, sizeof s->name, "%s", name);
  s->split = split;
  s->loading = 1;
  s->refs = 1;
  s->next = d->slots;
  d->slots = s;
  pthread_mutex_unlock(&d->mu);
  /* Loading outside the lock: a large upload takes seconds, and samples,
   * evaluations and other jobs' sets must not wait for it. */
  char got[65] = "";
  int rc = load_split(d, name, split, &s->ds, got, msg, msglen);
  pthread_mutex_lock(&d->mu);
  s->loading = 0;
  memcpy(s->sha, got, sizeof got);
  if (rc) {
    slot_unlink(d, s);
    slot_free(s);
  } else {
    *ds = &s->ds;
  }
  pthread_cond_broadcast(&d->loaded);
  pthread_mutex_unlock(&d->mu);
  return rc;
}

void srv_data_put(srv_data *d, const nn_dataset *ds) {
  pthread_mutex_lock(&d->mu);
  for (slot *s = d->slots; s; s = s->next) {
    if (&s->ds != ds) continue;
    if (--s->refs == 0 && (s->split == NN_SPLIT_TRAIN || s->dead)) {
      slot_unlink(d, s);
      slot_free(s);
    }
    break;
  }
  pthread_mutex_unlock(&d->mu);
}

int srv_data_count(srv_data *d, const char *name, uint32_t *train, uint32_t *test) {
  if (!srv_dataset_is_builtin(name))
    return d->up ? srv_datasets_count(d->up, name, train, test, NULL) : -ENOENT;
  char dir[PATH_MAX + 64];
  if (srv_dataset_dir(d->dir, name, dir, sizeof dir)) return -ENOENT;
  nn_err err = {0};
  int rc = nn_dataset_count_dir(dir, NN_SPLIT_TRAIN, train, &err);
  if (!rc) rc = nn_dataset_count_dir(dir, NN_SPLIT_TEST, test, &err);
  return rc ? (rc == NN_ENOENT ? -ENOENT : -EINVAL) : 0;
}
