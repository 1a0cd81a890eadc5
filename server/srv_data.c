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
  nn_split split;
  nn_dataset ds;
  int refs;
  struct slot *next;
} slot;

struct srv_data {
  pthread_mutex_t mu;
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

void srv_data_forget(srv_data *d, const char *name) {
  pthread_mutex_lock(&d->mu);
  for (slot **pp = &d->slots; *pp;) {
    slot *s = *pp;
    if (strcmp(s->name, name) || s->refs) {
      pp = &s->next;
      continue;
    }
    *pp = s->next;
    nn_dataset_free(&s->ds);
    free(s);
  }
  pthread_mutex_unlock(&d->mu);
}

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
  if (!s && !srv_dataset_is_builtin(name)) {
    if (!d->up || !(s = calloc(1, sizeof *s))) {
      snprintf(msg, msglen, "data set %s not found", name);
      rc = d->up ? -ENOMEM : -ENOENT;
      goto out;
    }
    if ((rc = srv_datasets_load(d->up, name, split, &s->ds, msg, msglen))) {
      free(s);
      goto out;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    s->split = split;
    s->next = d->slots;
    d->slots = s;
  }
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
