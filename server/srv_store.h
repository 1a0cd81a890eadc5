/* srv_store: the daemon's durable records in SQLite (WAL mode) — jobs,
 * per-epoch metrics, job events, models and settings. Model weights and
 * checkpoints are files beside the database; this module only knows their
 * ids.
 *
 * Every function takes the store's (recursive) mutex, so any thread may
 * call it, and a *_each callback may call back into the store.
 * Functions return 0 or a negative errno-style code (-EIO for SQLite
 * failures, -ENOSPC when the disk is full, -ENOENT for a missing row);
 * srv_store_errmsg() has SQLite's last message. Strings passed in are
 * copied; strings handed to callbacks live only for the call. */
#ifndef MNISTD_SRV_STORE_H
#define MNISTD_SRV_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct srv_store srv_store;

/* Opens (creating if needed) DIR/mnistd.db with WAL and synchronous=FULL,
 * and creates the tables. On failure *out is NULL and msg says why. */
int srv_store_open(srv_store **out, const char *dir, char *msg, size_t msglen);
void srv_store_close(srv_store *s);
const char *srv_store_errmsg(srv_store *s);
/* PRAGMA integrity_check == "ok": 0, else -EIO. */
int srv_store_check(srv_store *s);

typedef struct srv_job_row {
  int64_t id;
  const char *state;
  const char *config_json;
  int64_t created_ms, started_ms, finished_ms; /* 0 = not yet */
  int64_t model_id;                            /* 0 = none */
  const char *error;                           /* NULL = none */
} srv_job_row;

/* Inserts a job in state "queued"; *id receives its id. */
int srv_store_job_insert(srv_store *s, const char *config_json, int64_t created_ms,
                         int64_t *id);
/* Rewrites the mutable fields of a job. */
int srv_store_job_update(srv_store *s, const srv_job_row *row);
/* Calls cb for every job in id order. A non-zero return stops the walk. */
int srv_store_jobs_each(srv_store *s, int (*cb)(const srv_job_row *row, void *user),
                        void *user);

/* Upserts the metrics row of (job, epoch): a resumed epoch replaces it. */
int srv_store_metric_put(srv_store *s, int64_t job, uint32_t epoch, const char *json);
int srv_store_metrics_each(srv_store *s, int64_t job,
                           int (*cb)(uint32_t epoch, const char *json, void *user),
                           void *user);

/* Appends event seq of a job; epoch tags it for cleanup on resume. */
int srv_store_event_add(srv_store *s, int64_t job, uint64_t seq, uint32_t epoch,
                        const char *type, const char *json);
int srv_store_events_each(srv_store *s, int64_t job,
                          int (*cb)(uint64_t seq, const char *type, const char *json,
                                    void *user),
                          void *user);
/* Forgets metrics and events of epochs after `epoch` (a job resuming from
 * its checkpoint of that epoch will produce them again). Progress events
 * of the unfinished epoch go too. */
int srv_store_job_rewind(srv_store *s, int64_t job, uint32_t epoch);

typedef struct srv_model_row {
  int64_t id;
  const char *arch, *dataset;
  uint64_t parameters;
  double test_accuracy, test_loss;
  int64_t job_id, created_ms;
} srv_model_row;

/* Inserts a model and sets the job's final fields in one transaction, so a
 * crash leaves either both or neither. job may be NULL. *id receives the
 * model's id. */
int srv_store_model_insert(srv_store *s, const srv_model_row *m, const srv_job_row *job,
                           int64_t *id);
/* Reserves the next model id (so its file can be written first). */
int srv_store_model_next_id(srv_store *s, int64_t *id);
int srv_store_model_delete(srv_store *s, int64_t id);
int srv_store_models_each(srv_store *s, int (*cb)(const srv_model_row *m, void *user),
                          void *user);

/* Settings: small key/value strings (the active model id). get copies into
 * buf; -ENOENT if absent. */
int srv_store_setting_set(srv_store *s, const char *key, const char *value);
int srv_store_setting_get(srv_store *s, const char *key, char *buf, size_t len);

#endif
