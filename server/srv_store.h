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
#include <sys/types.h>

typedef struct srv_store srv_store;

/* Makes the entries of a directory durable (created, renamed or removed
 * files): fsync of the directory. 0 or a negative errno. */
int srv_fsync_dir(const char *dir);
/* mkdir that makes a new directory durable (fsync of its parent); 0 if it
 * exists already as a directory, else a negative errno. */
int srv_mkdir_durable(const char *dir, mode_t mode);

/* Opens (creating if needed) DIR/mnistd.db with WAL and synchronous=FULL,
 * and creates the tables. On failure *out is NULL and msg says why. Used by
 * tools that read the state beside a running daemon (mnistd export): it
 * never moves anything. */
int srv_store_open(srv_store **out, const char *dir, char *msg, size_t msglen);

/* Opens DIR/mnistd.db read-only for a reader that must not change the
 * daemon's state (mnistd train --state-dir): nothing in DIR is created,
 * written or removed except what SQLite's shared-memory index (-shm)
 * holds, and close does not checkpoint. Beside a running (or killed)
 * daemon it reads through the write-ahead log; with no log (the daemon
 * stopped cleanly) it reads the file alone ("immutable"). Errors, msg
 * saying what to do: -ENOENT no mnistd.db, -EIO an empty (damaged) file,
 * -EAGAIN a log without its -shm (SQLite would have to create it), or
 * SQLite's error. Writes through it fail (-EIO). */
int srv_store_open_readonly(srv_store **out, const char *dir, char *msg, size_t msglen);
/* For a store opened read-only without a log: 1 if DIR/mnistd.db changed
 * since the open (a daemon started and checkpointed meanwhile), so what
 * was read may be torn and must be read again; else 0. */
int srv_store_readonly_changed(srv_store *s, const char *dir);

/* The daemon's open (it holds the state directory's lock): also checks
 * integrity, and with SRV_STORE_RECOVER a damaged database (SQLite says
 * corrupt or "not a database", integrity_check fails, or the file is
 * empty) is never deleted: it is renamed to DIR/mnistd.db.damaged-<UTC
 * time> (its -wal/-shm beside it) and a fresh one is created;
 * srv_store_recovered() then names the aside file and msg holds the reason.
 * Other failures (permissions, locks, I/O) are reported, not worked
 * around. */
#define SRV_STORE_RECOVER 1
int srv_store_open_flags(srv_store **out, const char *dir, int flags, char *msg, size_t msglen);
/* Checkpoints the WAL and closes; NULL is a no-op. */
void srv_store_close(srv_store *s);
/* 1 if the database had to be moved aside at open (aside receives its new
 * path), else 0. */
int srv_store_recovered(srv_store *s, char *aside, size_t len);
/* 1 if the database was created empty by this open (no file, a zero-length
 * file, or a recovery): records of model files on disk may be missing. */
int srv_store_fresh(srv_store *s);

/* Test-only crash hook: if the environment variable MNISTD_CRASH_AT names
 * this point, the process kills itself with SIGKILL here (a crash at the
 * worst moment, reproducible). MNISTD_TERM_AT=name sends SIGTERM to itself
 * instead (a shutdown arriving at that moment). Inert when unset. */
void srv_crash_point(const char *name);
/* Test-only failure injection: 1 if MNISTD_FAIL_AT names this point (the
 * caller then fails as the real fault would), else 0. */
int srv_fail_point(const char *name);
/* Test-only pause: if MNISTD_HOLD_AT names this point and MNISTD_HOLD_FILE
 * names a file, the calling thread creates FILE.reached and then waits
 * here while FILE exists (a test removes it to let the thread go on): a
 * moment made to last, so a test can act inside it without timing. */
void srv_hold_point(const char *name);
/* SQLite's last message on the store's connection, copied under the lock
 * into a buffer of the calling thread (valid until its next call). */
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

/* One durable event of a job's log: seq is its id on the wire; epoch tags
 * it for cleanup on resume (0 for state and end events). */
typedef struct srv_event_row {
  uint64_t seq;
  uint32_t epoch;
  const char *type, *json;
} srv_event_row;

/* Appends event seq of a job. */
int srv_store_event_add(srv_store *s, int64_t job, uint64_t seq, uint32_t epoch,
                        const char *type, const char *json);
/* Calls cb with each event of a job in seq order (under the store lock;
 * strings live for the call only); a non-zero return from cb stops early
 * and is not an error. 0 or a negative errno. */
int srv_store_events_each(srv_store *s, int64_t job,
                          int (*cb)(uint64_t seq, uint32_t epoch, const char *type,
                                    const char *json, void *user),
                          void *user);
/* Records a finished epoch: its metrics row (upserted) and its event, in
 * one transaction. */
int srv_store_epoch_put(srv_store *s, int64_t job, uint32_t epoch, const char *metrics_json,
                        const srv_event_row *ev);
/* Rewrites the job's row and appends n events in one transaction: a crash
 * leaves the new state with its events, or neither. */
int srv_store_job_finish(srv_store *s, const srv_job_row *row, const srv_event_row *ev,
                         size_t n);
/* A client's cancel of a job that a training thread has yet to notice:
 * recorded (idempotent) before the 202, so a crash before the job's end is
 * on record cannot resume it; requested tells whether one is on record. */
int srv_store_cancel_request(srv_store *s, int64_t job, int64_t now_ms);
int srv_store_cancel_requested(srv_store *s, int64_t job, int *yes);
/* Event ids handed out but not persisted (progress) must never be reused
 * after a crash: the job's ids are reserved in blocks. reserve records that
 * ids up to `upto` may be in use; reserved gives the recorded mark (0 if
 * none). The next id after a restart is above both this mark and every
 * stored event's id. */
int srv_store_seq_reserve(srv_store *s, int64_t job, uint64_t upto);
int srv_store_seq_reserved(srv_store *s, int64_t job, uint64_t *upto);
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

/* Inserts a model, sets the job's final fields, appends the job's final
 * events and (if activate) makes it the active model, all in one
 * transaction, so a crash leaves all of it or none. job may be NULL (then
 * no events). Accuracy and loss must be finite (-EINVAL otherwise: a NaN
 * must never reach the records); NaN stands for "unknown" only when read
 * back from a row holding NULL. *id receives the model's id. */
int srv_store_model_insert(srv_store *s, const srv_model_row *m, const srv_job_row *job,
                           const srv_event_row *ev, size_t n_ev, int activate, int64_t *id);
/* Inserts a model row recovered from a file on disk (accuracy and loss may
 * be NaN: stored as NULL) with its own id, keeping the job id sequence
 * above job_id so new jobs do not reuse the ids the file names. */
int srv_store_model_recover(srv_store *s, const srv_model_row *m);
/* Reserves the next model id (so its file can be written first). */
int srv_store_model_next_id(srv_store *s, int64_t *id);
int srv_store_model_delete(srv_store *s, int64_t id);
int srv_store_models_each(srv_store *s, int (*cb)(const srv_model_row *m, void *user),
                          void *user);

/* Settings: small key/value strings (the active model id). get copies into
 * buf; -ENOENT if absent. */
int srv_store_setting_set(srv_store *s, const char *key, const char *value);
int srv_store_setting_get(srv_store *s, const char *key, char *buf, size_t len);

/* Uploaded data sets: one row per name with its description as JSON (the
 * file STATE/datasets/NAME.mds holds the images). put inserts or replaces;
 * each walks the rows in name order (a non-zero return stops it). */
int srv_store_dataset_put(srv_store *s, const char *name, const char *info_json);
int srv_store_dataset_delete(srv_store *s, const char *name);
int srv_store_datasets_each(srv_store *s, int (*cb)(const char *name, const char *info, void *u),
                            void *u);

#endif
