/* srv_models: the models the daemon holds (weights in memory, records in
 * the store, files in STATE/models/ID.model) and which one is active,
 * including the activation policy (if_better).
 *
 * Models are reference counted: srv_models_get()/srv_models_active() hand
 * out a reference the caller drops with srv_model_unref(). Activating
 * another model swaps a pointer; requests still holding the old one finish
 * on it and the last unref frees it (zero-downtime swap). */
#ifndef MNISTD_SRV_MODELS_H
#define MNISTD_SRV_MODELS_H

#include <stdatomic.h>
#include <stdint.h>

#include "nn.h"
#include "srv_store.h"
#include "srv_validate.h"

/* A registered model. As in uv.h, fields are marked: public read-only ones
 * a holder of a reference may read (never write); private ones belong to
 * the registry (srv_registry.c) alone. */
typedef struct srv_model {
  /* public, read-only */
  int64_t id;
  nn_model *m;            /* never changes once registered */
  char arch[32], dataset[72];
  char **classes;         /* n_classes names, one block; index = output = label */
  uint32_t n_classes;
  double test_accuracy, test_loss;
  int64_t job_id, created_ms;
  size_t file_bytes;
  /* private */
  atomic_int refs;        /* use srv_model_ref/srv_model_unref */
  char *evaluation;       /* cached JSON of GET .../evaluation, guarded by the registry */
} srv_model;

typedef struct srv_models srv_models;

/* Loads every model recorded in the store whose file is valid; a missing or
 * corrupt file is reported through log(msg) and skipped. Restores the
 * active model (falling back to the newest valid one). When the store is
 * fresh (srv_store_fresh: a new or recovered database) the model files
 * found in STATE/models are registered again from their own contents and
 * their ID.json metadata (dataset, accuracy, loss, job, time; unknown
 * accuracy without it), each one logged; srv_models_recovered counts them.
 * Every model file is written with such a metadata file beside it. */
int srv_models_open(srv_models **out, srv_store *st, const char *state_dir,
                    void (*log)(const char *msg));
/* Drops the registry's references (models still held elsewhere live on
 * until their last unref) and frees it; NULL is a no-op. */
void srv_models_close(srv_models *r);
/* Models registered again from disk at open (0 normally). */
int srv_models_recovered(srv_models *r);

srv_model *srv_models_get(srv_models *r, int64_t id);   /* NULL if unknown */
srv_model *srv_models_active(srv_models *r);            /* NULL if none */
/* Takes one more reference to m (which the caller already holds one of)
 * and returns m; NULL is passed through. */
srv_model *srv_model_ref(srv_model *m);
/* Drops one reference; the last one frees the model. NULL is a no-op. */
void srv_model_unref(srv_model *m);
int64_t srv_models_active_id(srv_models *r);            /* 0 if none */

/* Calls cb with each model (id order) under the registry lock; cb must not
 * call back into the registry. */
void srv_models_each(srv_models *r, void (*cb)(const srv_model *m, int active, void *u),
                     void *u);

/* Every change of the records or of the active model (add, activate,
 * delete) is serialised by one writer lock, and decisions such as
 * "activate if better" are taken under it; the lock that predictions take
 * is only held to swap pointers, never across SQLite writes or fsync. */

/* Makes id the active model and records it. -ENOENT if unknown; a store
 * error (-EIO, -ENOSPC) leaves the active model as it was. */
int srv_models_activate(srv_models *r, int64_t id);
/* Removes a model (record, file, memory). -EBUSY for the active model,
 * -ENOENT if unknown. */
int srv_models_delete(srv_models *r, int64_t id);

/* How a job's model ends: the job's final row (NULL: no job), whether to
 * activate it, and a callback that writes the job's final events once the
 * model's id and the activation decision are known (called under the
 * writer lock; it fills up to 4 rows of ev and sets *n; the strings stay
 * the caller's). */
typedef struct srv_model_finish {
  const srv_job_row *job;
  srv_activate activate;
  int (*events)(void *u, int64_t model_id, int activated, srv_event_row *ev, size_t *n);
  void *u;
  char *const *classes;   /* the data set's class names (NULL: "0".."k-1", or the
                           * built-in set's names); recorded in ID.json */
  uint32_t n_classes;
} srv_model_finish;

/* Registers a trained model: writes its file and metadata atomically, then
 * in one transaction inserts the record, the job's final row and events,
 * and the activation. "if better" compares with the active model under
 * the writer lock: a better test accuracy on the same data set, or an
 * active model that is absent, of another data set or of unknown accuracy.
 * Takes ownership of m on success. *out_id receives the id, *activated
 * whether it became active. acc and loss must be finite (-EINVAL). */
int srv_models_add(srv_models *r, nn_model *m, const char *dataset, double acc, double loss,
                   int64_t job_id, const srv_model_finish *fin, int64_t *out_id,
                   int *activated, char *msg, size_t msglen);

/* Called (on the changing thread, under the registry's writer lock: it
 * must not call back into the registry) each time another model becomes
 * active, by activation, a finished job or srv_models_install. */
void srv_models_set_notify(srv_models *r, void (*cb)(void *u, int64_t id), void *u);

/* ---- replicas (srv_follow.h): a registry with no store and no files,
 * holding only the model copied from the primary. */
int srv_models_open_replica(srv_models **out);

typedef struct srv_model_info {
  int64_t id, job_id, created_ms;
  char dataset[32];
  double test_accuracy, test_loss;
  size_t file_bytes;
  char *const *classes;   /* the primary's class names (copied); NULL or a count
                             that does not fit the model: the built-in set's
                             names, or "0".."k-1" */
  uint32_t n_classes;
} srv_model_info;

/* Makes nm (the registry's on success; the caller's on error) the only
 * and active model of a replica registry, under the primary's id, through
 * the same pointer swap as activation: requests holding the previous model
 * finish on it. -EPERM for a registry with a store, -EINVAL for a model
 * srv_model_usable refuses, -ENOMEM. */
int srv_models_install(srv_models *r, const srv_model_info *info, nn_model *nm);

/* Whether this daemon can predict with nm: its input must be one 28x28
 * image (784 values; every predict route reads that) and its outputs at
 * most NN_MAX_CLASSES. 0, or -EINVAL with why (a sentence naming the
 * sizes). Models that fail it are refused where they enter: at load (a
 * log line, like a damaged file), srv_models_add and srv_models_install. */
int srv_model_usable(const nn_model *nm, char *why, size_t len);

/* Path of a model's file (for downloads). */
void srv_models_path(srv_models *r, int64_t id, char *buf, size_t len);

/* Evaluation cache: returns a malloc'd copy or NULL; set stores a copy. */
char *srv_models_eval_get(srv_models *r, srv_model *m);
void srv_models_eval_set(srv_models *r, srv_model *m, const char *json);

#endif
