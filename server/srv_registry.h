/* srv_registry: the models the daemon holds (weights in memory, records in
 * the store, files in STATE/models/ID.model), which one is active, and the
 * data sets it has loaded.
 *
 * Models are reference counted: srv_models_get()/srv_models_active() hand
 * out a reference the caller drops with srv_model_unref(). Activating
 * another model swaps a pointer; requests still holding the old one finish
 * on it and the last unref frees it (zero-downtime swap). */
#ifndef MNISTD_SRV_REGISTRY_H
#define MNISTD_SRV_REGISTRY_H

#include <stdatomic.h>
#include <stdint.h>

#include "nn.h"
#include "srv_store.h"

typedef struct srv_model {
  int64_t id;
  nn_model *m;            /* read-only once registered */
  char arch[32], dataset[32];
  double test_accuracy, test_loss;
  int64_t job_id, created_ms;
  size_t file_bytes;
  atomic_int refs;
  char *evaluation;       /* cached JSON of GET .../evaluation, guarded by the registry */
} srv_model;

typedef struct srv_models srv_models;

/* Loads every model recorded in the store whose file is valid; a missing or
 * corrupt file is reported through log(msg) and skipped. Restores the
 * active model (falling back to the newest valid one). */
int srv_models_open(srv_models **out, srv_store *st, const char *state_dir,
                    void (*log)(const char *msg));
void srv_models_close(srv_models *r);

srv_model *srv_models_get(srv_models *r, int64_t id);   /* NULL if unknown */
srv_model *srv_models_active(srv_models *r);            /* NULL if none */
void srv_model_unref(srv_model *m);
int64_t srv_models_active_id(srv_models *r);            /* 0 if none */

/* Calls cb with each model (id order) under the registry lock; cb must not
 * call back into the registry. */
void srv_models_each(srv_models *r, void (*cb)(const srv_model *m, int active, void *u),
                     void *u);

/* Makes id the active model and records it. -ENOENT if unknown. */
int srv_models_activate(srv_models *r, int64_t id);
/* Removes a model (record, file, memory). -EBUSY for the active model,
 * -ENOENT if unknown. */
int srv_models_delete(srv_models *r, int64_t id);

/* Registers a trained model: writes its file atomically, then inserts the
 * record and the job's final row (job may be NULL) in one transaction.
 * Takes ownership of m on success. *out_id receives the id. */
int srv_models_add(srv_models *r, nn_model *m, const char *dataset, double acc, double loss,
                   int64_t job_id, const srv_job_row *job, int64_t *out_id, char *msg,
                   size_t msglen);

/* Path of a model's file (for downloads). */
void srv_models_path(srv_models *r, int64_t id, char *buf, size_t len);

/* Evaluation cache: returns a malloc'd copy or NULL; set stores a copy. */
char *srv_models_eval_get(srv_models *r, srv_model *m);
void srv_models_eval_set(srv_models *r, srv_model *m, const char *json);

/* ---- data sets: loaded on first use, shared, reference counted. */
typedef struct srv_data srv_data;

int srv_data_open(srv_data **out, const char *data_dir);
void srv_data_close(srv_data *d);
/* A loaded split of a data set ("mnist", "fashion-mnist"); drop it with
 * srv_data_put. Training sets are freed when nobody holds them (they are
 * most of the daemon's memory); test sets stay for samples and evaluation. */
int srv_data_get(srv_data *d, const char *name, nn_split split, const nn_dataset **ds,
                 char *msg, size_t msglen);
void srv_data_put(srv_data *d, const char *name, nn_split split);
/* Counts from the file headers without loading: -ENOENT if absent. */
int srv_data_count(srv_data *d, const char *name, uint32_t *train, uint32_t *test);

#endif
