/* Training jobs. One mutex (J->mu) guards every job's fields, event logs
 * and subscriber lists.
 *
 * Lock order, the same everywhere in the daemon (a thread holding one of
 * these takes only locks further down the list):
 *   1. the registry's writer lock (srv_models.c wr_mu; its list lock mu is
 *      never held across another);
 *   2. the jobs' J->mu;
 *   3. the uploaded data sets' mu (srv_datasets.c);
 *   4. the data cache's mu (srv_data.c), never held with 3;
 *   5. the store's mu (srv_store.c): innermost. Its *_each callbacks run
 *      under it and so take none of the locks above (load_job leaves the
 *      data set lookups to load_sizes, after the rows are read).
 * Slow work (SQLite commits, fsync, unlink, reading files) is done with
 * as few of them held as correctness allows. */
#include "srv_jobs.h"
#include "srv_datasets.h"
#include "srv_train.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HEARTBEAT_MS 15000
#define PROGRESS_MS 250
/* Event ids are reserved in the store this many at a time. */
#define SEQ_BLOCK 128

typedef struct event {
  uint64_t id;
  uint32_t epoch;
  char type[12];
  char *data;
} event;

typedef struct job job;

struct srv_sub {
  srv_jobs *J;
  job *j;
  uint64_t last;          /* id of the last event sent */
  int ndjson;
  int waiting;            /* reported "no data"; wake on news */
  int heartbeat;          /* a comment is due */
  int closing;            /* the daemon stops: end the stream */
  char *pending;          /* formatted bytes not yet copied out */
  size_t pending_len, pending_off;
  void (*wake)(void *);
  void *ctx;
  srv_sub *next;
};

struct job {
  int64_t id;
  srv_job_state state;
  srv_job_config cfg;
  char *config_json;
  int64_t created_ms, started_ms, finished_ms, model_id;
  char error[512];
  uint64_t parameters;
  /* progress of the running epoch */
  uint32_t epoch, epochs_done, batch, batches;
  float loss, accuracy;
  double sps, eta;
  uint64_t samples_done;
  double last_progress;   /* monotonic seconds of the last progress event */
  /* finished epochs: JSON rows */
  char **metrics;
  uint32_t n_metrics;
  /* event log */
  event *events;
  size_t n_events, cap_events;
  uint64_t seq;           /* last id handed out */
  uint64_t reserved;      /* ids up to this are recorded as possibly used */
  srv_sub *subs;
  int dirty;              /* new events since the last publish */
  atomic_int cancel;      /* set under J->mu, read by the trainer between batches */
  int shutdown;           /* cancel came from the daemon stopping */
  int user_cancel;        /* a client asked to cancel: wins over a shutdown */
  int resume;             /* continue from a checkpoint */
  int stranded;           /* its runner returned but its end is not on record
                             (the disk was full): only a cancel or a restart
                             ends it now */
  uv_work_t work;
  srv_jobs *J;
  job *next;              /* id order */
};

struct srv_jobs {
  pthread_mutex_t mu;
  uv_loop_t *loop;
  uv_async_t publish;     /* training threads -> loop: wake streams, schedule */
  uv_timer_t heartbeat;
  srv_store *st;
  srv_models *models;
  srv_data *data;
  srv_jobs_options opt;
  void (*on_state)(void *u, int64_t job, const char *state); /* srv_jobs_set_notify */
  void *on_state_u;
  char state_dir[PATH_MAX];
  job *jobs, *tail;
  int running;
  int stopping;
  int handles_closed;
  int n_subs;
  uint64_t samples_total; /* trained samples since start, for /metrics */
  double last_sps;
};

static const char *STATE_NAMES[SRV_JOB_NSTATES] = {"queued", "running", "succeeded", "failed",
                                                  "cancelled"};

const char *srv_job_state_name(srv_job_state s) {
  return (unsigned)s < SRV_JOB_NSTATES ? STATE_NAMES[s] : "unknown";
}

int srv_job_state_parse(const char *name) {
  for (int i = 0; i < SRV_JOB_NSTATES; i++)
    if (name && !strcmp(name, STATE_NAMES[i])) return i;
  return -1;
}

static int finished(srv_job_state s) { return s >= SRV_JOB_SUCCEEDED; }

/* The job's network: its spec (a preset's, or the user's layers). */
/* The job's network (its config always holds the layer spec, a preset's
 * included): the output layer gets one unit per class of the data set. */
static int job_model_create(nn_model **m, srv_jobs *J, const srv_job_config *c) {
  uint32_t k = NN_CLASSES;
  char **names = NULL;
  if (!srv_data_classes(J->data, c->dataset, &names, &k)) free(names);
  if (!c->n_layers) return nn_model_create_preset_classes(m, c->arch, k);
  nn_layer_spec spec[NN_MAX_SPECS];
  memcpy(spec, c->layers, c->n_layers * sizeof *spec);
  if (spec[c->n_layers - 1].type == NN_LAYER_DENSE) spec[c->n_layers - 1].units = k;
  return nn_model_create_spec(m, c->arch, NN_INPUT_MNIST, spec, c->n_layers, NULL);
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void logf_(srv_jobs *J, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(srv_jobs *J, const char *fmt, ...) {
  if (!J->opt.log) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  J->opt.log(buf);
}

static void checkpoint_path(srv_jobs *J, int64_t id, char *buf, size_t len) {
  snprintf(buf, len, "%s/checkpoints/%lld.ckpt", J->state_dir, (long long)id);
}

static job *find(srv_jobs *J, int64_t id) {
  for (job *j = J->jobs; j; j = j->next)
    if (j->id == id) return j;
  return NULL;
}

static void job_free(job *j) {
  for (size_t i = 0; i < j->n_events; i++) free(j->events[i].data);
  free(j->events);
  for (uint32_t i = 0; i < j->n_metrics; i++) free(j->metrics[i]);
  free(j->metrics);
  free(j->config_json);
  free(j);
}

static void append(srv_jobs *J, job *j) {
  if (J->tail) J->tail->next = j;
  else J->jobs = j;
  J->tail = j;
}

/* Hands out the next event id (caller holds J->mu). Ids of progress
 * events are never stored, so the store records a mark above every id
 * handed out, a block at a time: after a crash numbering continues above
 * it and no id a client saw is reused. 0 if the mark cannot be recorded. */
static uint64_t next_seq(srv_jobs *J, job *j) {
  if (j->seq + 1 > j->reserved) {
    uint64_t upto = j->seq + SEQ_BLOCK;
    if (srv_store_seq_reserve(J->st, j->id, upto)) return 0;
    j->reserved = upto;
  }
  return ++j->seq;
}

/* Appends an event to the in-memory log; takes s. Caller holds J->mu. */
static void push(srv_jobs *J, job *j, uint64_t seq, const char *type, uint32_t epoch, char *s) {
  if (j->n_events == j->cap_events) {
    size_t cap = j->cap_events ? j->cap_events * 2 : 16;
    event *e = realloc(j->events, cap * sizeof *e);
    if (!e) {
      free(s);
      return;
    }
    j->events = e;
    j->cap_events = cap;
  }
  event *e = &j->events[j->n_events++];
  e->id = seq;
  e->epoch = epoch;
  snprintf(e->type, sizeof e->type, "%s", type);
  e->data = s;
  j->dirty = 1;
  uv_async_send(&J->publish);
  if (J->on_state && !strcmp(type, "state"))
    J->on_state(J->on_state_u, j->id, srv_job_state_name(j->state));
}


/* Adds an event to the log. Every event but progress is durable: it is
 * shown only once the store holds it, so a stream never shows what a
 * restart would take back. Caller holds J->mu. */
static void emit(srv_jobs *J, job *j, const char *type, uint32_t epoch, cJSON *data) {
  srv_json_exact_ints(data); /* integers digit for digit (issue 9 #15) */
  char *s = cJSON_PrintUnformatted(data);
  cJSON_Delete(data);
  if (!s) return;
  uint64_t seq = next_seq(J, j);
  if (!seq || (strcmp(type, "progress") &&
               srv_store_event_add(J->st, j->id, seq, epoch, type, s))) {
    free(s);
    return;
  }
  push(J, j, seq, type, epoch, s);
}

static cJSON *state_event(job *j) {
  cJSON *d = cJSON_CreateObject();
  cJSON_AddNumberToObject(d, "job", (double)j->id);
  cJSON_AddStringToObject(d, "state", srv_job_state_name(j->state));
  if (j->error[0]) cJSON_AddStringToObject(d, "error", j->error);
  return d;
}

static char *print_free(cJSON *d) {
  srv_json_exact_ints(d); /* integers digit for digit (issue 9 #15) */
  char *s = cJSON_PrintUnformatted(d);
  cJSON_Delete(d);
  return s;
}

/* The "end" event of a finished job. activated < 0: not mentioned. */
static char *end_json(job *j, srv_job_state st, int64_t model_id, int activated) {
  cJSON *d = cJSON_CreateObject();
  cJSON_AddNumberToObject(d, "job", (double)j->id);
  cJSON_AddStringToObject(d, "state", srv_job_state_name(st));
  if (model_id) cJSON_AddNumberToObject(d, "model_id", (double)model_id);
  else cJSON_AddNullToObject(d, "model_id");
  if (activated >= 0) cJSON_AddBoolToObject(d, "activated", activated);
  return print_free(d);
}

static void persist(srv_jobs *J, job *j) {
  srv_job_row r = {j->id, srv_job_state_name(j->state), j->config_json, j->created_ms,
                   j->started_ms, j->finished_ms, j->model_id, j->error[0] ? j->error : NULL};
  int rc = srv_store_job_update(J->st, &r);
  if (rc) logf_(J, "job %lld: could not record state %s: %s", (long long)j->id,
                r.state, srv_store_errmsg(J->st));
}

/* Records a final state with its "state" and "end" events in one
 * transaction, then shows the events. Caller holds J->mu. 0, or a negative
 * errno when nothing could be recorded: the job then keeps its previous
 * state (in memory as in the store, which is what a restart will see), so
 * the caller must keep the checkpoint for the next start to resume from. */
static int finish_locked(srv_jobs *J, job *j, srv_job_state s) {
  srv_job_state was = j->state;
  j->state = s;
  j->finished_ms = wall_ms();
  char *st = print_free(state_event(j)), *en = end_json(j, s, j->model_id, -1);
  uint64_t a = next_seq(J, j), b = a ? next_seq(J, j) : 0;
  srv_job_row r = {j->id, srv_job_state_name(s), j->config_json, j->created_ms,
                   j->started_ms, j->finished_ms, j->model_id, j->error[0] ? j->error : NULL};
  srv_event_row ev[2] = {{a, 0, "state", st}, {b, 0, "end", en}};
  int rc = st && en && b ? srv_store_job_finish(J->st, &r, ev, 2) : -ENOMEM;
  if (rc) {
    logf_(J, "job %lld: could not record state %s: %s; it stays %s until the next start",
          (long long)j->id, r.state,
          rc == -ENOMEM   ? "out of memory"
          : rc == -ENOSPC ? "the disk is full"
                          : srv_store_errmsg(J->st),
          srv_job_state_name(was));
    free(st);
    free(en);
    j->state = was;
    j->finished_ms = 0;
    return rc;
  }
  push(J, j, a, "state", 0, st);
  push(J, j, b, "end", 0, en);
  return 0;
}

/* Moves a job to a new state, records it and tells the streams. Caller
 * holds J->mu. 0, or (final states only) the failure to record it. */
static int set_state(srv_jobs *J, job *j, srv_job_state s) {
  if (finished(s)) return finish_locked(J, j, s);
  j->state = s;
  if (s == SRV_JOB_RUNNING && !j->started_ms) j->started_ms = wall_ms();
  persist(J, j);
  emit(J, j, "state", 0, state_event(j));
  return 0;
}

/* Removes the checkpoint of a job whose end is on record (training thread,
 * lock not held). rc is what recording the end returned: on failure the
 * store still says "running", and the checkpoint is what the next start
 * resumes from, so it stays. */
static void drop_checkpoint(srv_jobs *J, job *j, const char *ck, int rc) {
  if (rc) {
    logf_(J, "job %lld: its end is not on record; the checkpoint stays for the next start",
          (long long)j->id);
    return;
  }
  unlink(ck);
}

/* ---------------------------------------------------------------- runner */

static cJSON *progress_json(const job *j) {
  cJSON *d = cJSON_CreateObject();
  cJSON_AddNumberToObject(d, "epoch", j->epoch);
  cJSON_AddNumberToObject(d, "epochs", j->cfg.epochs);
  cJSON_AddNumberToObject(d, "batch", j->batch);
  cJSON_AddNumberToObject(d, "batches", j->batches);
  cJSON_AddNumberToObject(d, "loss", round(j->loss * 1e6) / 1e6);
  cJSON_AddNumberToObject(d, "accuracy", round(j->accuracy * 1e6) / 1e6);
  cJSON_AddNumberToObject(d, "samples_per_second", round(j->sps));
  cJSON_AddNumberToObject(d, "eta_seconds", round(j->eta * 10) / 10);
  return d;
}

typedef struct run_ctx {
  job *j;
  double t0;
  uint32_t train_n;
} run_ctx;

static int on_progress(const nn_progress *p, void *user) {
  run_ctx *c = user;
  job *j = c->j;
  srv_jobs *J = j->J;
  /* Cancelling through the callback keeps the flag a C11 atomic. */
  if (atomic_load(&j->cancel)) return 1;
  double now = mono_s();
  pthread_mutex_lock(&J->mu);
  j->epoch = p->epoch;
  j->batch = p->batch;
  j->batches = p->batches;
  j->loss = p->loss;
  j->accuracy = p->accuracy;
  j->sps = now > c->t0 ? p->samples / (now - c->t0) : 0;
  /* ETA of the whole job: the rest of this epoch plus the epochs to come. */
  double left = (double)(c->train_n - p->samples) +
                (double)(j->cfg.epochs - p->epoch) * c->train_n;
  j->eta = j->sps > 0 ? left / j->sps : 0;
  if (now - j->last_progress >= PROGRESS_MS / 1000.0 || p->batch == p->batches) {
    j->last_progress = now;
    emit(J, j, "progress", p->epoch, progress_json(j));
  }
  pthread_mutex_unlock(&J->mu);
  return 0;
}

static char *metrics_json(const nn_epoch_metrics *m) {
  char buf[512];
  return srv_epoch_json(m, buf, sizeof buf) < 0 ? NULL : strdup(buf);
}

/* Fails the job with a message (training thread, lock not held). A failed
 * job never resumes, so its checkpoint only takes space: it goes once the
 * failure is on record (a crash in between leaves an orphan that the next
 * start removes, never a failed job that runs again). */
static void fail_job(srv_jobs *J, job *j, const char *msg) {
  char ck[PATH_MAX + 64];
  checkpoint_path(J, j->id, ck, sizeof ck);
  pthread_mutex_lock(&J->mu);
  snprintf(j->error, sizeof j->error, "%s", msg);
  int rc = set_state(J, j, SRV_JOB_FAILED);
  pthread_mutex_unlock(&J->mu);
  srv_crash_point("fail_recorded");
  logf_(J, "job %lld failed: %s", (long long)j->id, msg);
  drop_checkpoint(J, j, ck, rc);
}

/* Success: the final events, built once the model id and the activation
 * decision are known, under the registry's writer lock. */
typedef struct fin_ctx {
  srv_jobs *J;
  job *j;
  char *state_s, *end_s;
  uint64_t seq[2];
} fin_ctx;

static int fin_events(void *u, int64_t model_id, int activated, srv_event_row *ev, size_t *n) {
  fin_ctx *c = u;
  pthread_mutex_lock(&c->J->mu);
  cJSON *d = cJSON_CreateObject();
  cJSON_AddNumberToObject(d, "job", (double)c->j->id);
  cJSON_AddStringToObject(d, "state", "succeeded");
  free(c->state_s);
  free(c->end_s);
  c->state_s = print_free(d);
  c->end_s = end_json(c->j, SRV_JOB_SUCCEEDED, model_id, activated);
  c->seq[0] = next_seq(c->J, c->j);
  c->seq[1] = c->seq[0] ? next_seq(c->J, c->j) : 0;
  pthread_mutex_unlock(&c->J->mu);
  if (!c->state_s || !c->end_s || !c->seq[1]) return -1;
  ev[0] = (srv_event_row){c->seq[0], 0, "state", c->state_s};
  ev[1] = (srv_event_row){c->seq[1], 0, "end", c->end_s};
  *n = 2;
  return 0;
}

/* What one run of a job works with (training thread, lock not held). */
typedef struct run {
  srv_jobs *J;
  job *j;
  nn_model *m;          /* the run's until the registry takes it */
  nn_trainer *t;
  nn_workspace *ews;
  nn_dataset tv, sv;    /* views that stop at the limits */
  const char *ck;       /* checkpoint path */
  float vloss, vacc;    /* last evaluation of this run; NaN if none */
} run;

/* Drops what a crashed run logged past the checkpoint, in memory as in the
 * store (a job starting over replays only its new epochs), and marks the
 * job running. Returns the epochs already done. */
static uint32_t run_begin(run *r) {
  srv_jobs *J = r->J;
  job *j = r->j;
  uint32_t done = nn_trainer_epoch(r->t);
  if (done > j->cfg.epochs) done = j->cfg.epochs;
  /* On failure the stale rows stay until the redone epochs overwrite them
   * (INSERT OR REPLACE): worth a log line, not the job. */
  if (srv_store_job_rewind(J->st, j->id, done))
    logf_(J, "job %lld: could not drop its records past epoch %u: %s", (long long)j->id, done,
          srv_store_errmsg(J->st));
  pthread_mutex_lock(&J->mu);
  while (j->n_metrics > done) free(j->metrics[--j->n_metrics]);
  size_t keep = 0;
  for (size_t i = 0; i < j->n_events; i++) {
    event *e = &j->events[i];
    if (e->epoch > done && strcmp(e->type, "state")) free(e->data);
    else j->events[keep++] = *e;
  }
  j->n_events = keep;
  j->epochs_done = done;
  j->parameters = r->m->n_params;
  j->batches = (r->tv.n + j->cfg.batch_size - 1) / j->cfg.batch_size;
  set_state(J, j, SRV_JOB_RUNNING);
  pthread_mutex_unlock(&J->mu);
  logf_(J, "job %lld running: %s on %s, %u epochs from epoch %u", (long long)j->id,
        j->cfg.arch, j->cfg.dataset, j->cfg.epochs, done + 1);
  return done;
}

/* Records a finished epoch: its row and event (one transaction), then the
 * checkpoint. After a crash between the two the epoch is redone and, being
 * deterministic, rewrites the same row (its event comes again under a new
 * id). 0, or -1 when the job failed (recorded). */
static int run_record_epoch(run *r, uint32_t e, const nn_epoch_metrics *mt) {
  srv_jobs *J = r->J;
  job *j = r->j;
  char msg[700];
  nn_err err = {0};
  int rc = 0;
  char *row = metrics_json(mt);
  pthread_mutex_lock(&J->mu);
  uint64_t seq = next_seq(J, j);
  pthread_mutex_unlock(&J->mu);
  srv_event_row ev = {seq, e, "epoch", row};
  if (!row || !seq || (rc = srv_store_epoch_put(J->st, j->id, e, row, &ev))) {
    free(row);
    snprintf(msg, sizeof msg, "could not record epoch %u: %s", e,
             rc == -ENOSPC ? "the disk is full" : srv_store_errmsg(J->st));
    fail_job(J, j, msg);
    return -1;
  }
  pthread_mutex_lock(&J->mu);
  char **mr = realloc(j->metrics, (j->n_metrics + 1) * sizeof *mr);
  char *copy = strdup(row);
  if (mr) {
    j->metrics = mr;
    j->metrics[j->n_metrics++] = row;
  } else {
    free(row);
  }
  j->epochs_done = e;
  J->samples_total += r->tv.n;
  J->last_sps = mt->samples_per_second;
  if (copy) push(J, j, seq, "epoch", e, copy);
  pthread_mutex_unlock(&J->mu);
  srv_crash_point("epoch_recorded");
  if (nn_checkpoint_save(r->t, r->ck, &err)) {
    snprintf(msg, sizeof msg, "could not write the checkpoint: %s", err.msg);
    fail_job(J, j, msg);
    return -1;
  }
  srv_crash_point(e == j->cfg.epochs ? "last_checkpoint" : "checkpoint_saved");
  return 0;
}

/* Trains the epochs after `done`: 0 when they are done or a cancel stopped
 * them, -1 when the job failed (recorded). */
static int run_epochs(run *r, uint32_t done) {
  job *j = r->j;
  char msg[128];
  nn_epoch_metrics mt = {0};
  for (uint32_t e = done + 1; e <= j->cfg.epochs; e++) {
    run_ctx rc_ = {j, mono_s(), r->tv.n};
    int rc = nn_train_epoch(r->t, &r->tv, on_progress, &rc_, NULL, &mt);
    if (rc == NN_ECANCELED) break;
    if (rc) {
      snprintf(msg, sizeof msg, "training failed: %s", nn_strerror(rc));
      fail_job(r->J, j, msg);
      return -1;
    }
    double t1 = mono_s();
    if ((rc = nn_evaluate(r->m, r->ews, &r->sv, &r->vloss, &r->vacc, NULL))) {
      snprintf(msg, sizeof msg, "evaluation failed: %s", nn_strerror(rc));
      fail_job(r->J, j, msg);
      return -1;
    }
    mt.val_loss = r->vloss;
    mt.val_accuracy = r->vacc;
    mt.eval_seconds = mono_s() - t1;
    if (!isfinite(mt.loss) || !isfinite(r->vloss) || !isfinite(r->vacc)) {
      fail_job(r->J, j, "training diverged (the loss is not a number); try a lower learning_rate");
      return -1;
    }
    if (run_record_epoch(r, e, &mt)) return -1;
  }
  return 0;
}

/* After the epochs: 1 if a cancel or a shutdown stops the job here. */
static int run_stopped(run *r) {
  srv_jobs *J = r->J;
  job *j = r->j;
  if (!atomic_load(&j->cancel)) return 0;
  pthread_mutex_lock(&J->mu);
  /* A cancel the client was told about (202) stands even when a shutdown
   * follows before this thread noticed it: the job must not resume. */
  if (j->user_cancel || !j->shutdown) {
    int rc = set_state(J, j, SRV_JOB_CANCELLED);
    pthread_mutex_unlock(&J->mu);
    srv_crash_point("cancel_recorded");
    drop_checkpoint(J, j, r->ck, rc);
    return 1;
  }
  if (j->epochs_done < j->cfg.epochs) {
    /* Stays "running" in the store: the next start resumes it. */
    logf_(J, "job %lld interrupted by shutdown after epoch %u", (long long)j->id,
          j->epochs_done);
    pthread_mutex_unlock(&J->mu);
    return 1;
  }
  /* Every epoch is trained and evaluated: registering the model takes a
   * moment, and leaving it for the next start would only redo it. */
  logf_(J, "job %lld: shutdown after its last epoch; finishing it first", (long long)j->id);
  pthread_mutex_unlock(&J->mu);
  return 0;
}

/* Registers the model, finishes the job, records its events and the
 * activation in one transaction. */
static void run_finish(run *r) {
  srv_jobs *J = r->J;
  job *j = r->j;
  char msg[700];
  /* Resumed after its last epoch (a crash or a shutdown between the last
   * checkpoint and the model's record): evaluate now. A NaN never reaches
   * the records or a comparison. */
  if (!isfinite(r->vacc) || !isfinite(r->vloss)) {
    /* A failed evaluation leaves NaN: the job fails just below. */
    if (nn_evaluate(r->m, r->ews, &r->sv, &r->vloss, &r->vacc, NULL)) r->vacc = NAN;
    logf_(J, "job %lld: evaluated the trained model after the restart: accuracy %.4f",
          (long long)j->id, (double)r->vacc);
  }
  if (!isfinite(r->vacc) || !isfinite(r->vloss)) {
    fail_job(J, j, "the evaluation of the trained model gave no number (diverged)");
    return;
  }
  pthread_mutex_lock(&J->mu);
  srv_job_row row = {j->id, "succeeded", j->config_json, j->created_ms, j->started_ms,
                     wall_ms(), 0, NULL};
  pthread_mutex_unlock(&J->mu);
  fin_ctx fc = {J, j, NULL, NULL, {0, 0}};
  char **classes = NULL;
  uint32_t n_classes = 0;
  if (srv_data_classes(J->data, j->cfg.dataset, &classes, &n_classes)) classes = NULL;
  srv_model_finish fin = {&row, j->cfg.activate, fin_events, &fc, classes, n_classes};
  int64_t mid = 0;
  int activated = 0;
  int add_rc = srv_models_add(J->models, r->m, j->cfg.dataset, r->vacc, r->vloss, j->id, &fin,
                              &mid, &activated, msg, sizeof msg);
  free(classes);
  if (add_rc) {
    free(fc.state_s);
    free(fc.end_s);
    fail_job(J, j, msg);
    return;
  }
  r->m = NULL; /* the registry owns it now */
  pthread_mutex_lock(&J->mu);
  j->model_id = mid;
  j->finished_ms = row.finished_ms;
  j->state = SRV_JOB_SUCCEEDED;
  push(J, j, fc.seq[0], "state", 0, fc.state_s);
  push(J, j, fc.seq[1], "end", 0, fc.end_s);
  pthread_mutex_unlock(&J->mu);
  unlink(r->ck);
  logf_(J, "job %lld succeeded: model %lld, test accuracy %.4f%s", (long long)j->id,
        (long long)mid, (double)r->vacc, activated ? " (active)" : "");
}

/* Parameters of the job's network: its output layer has one unit per class
 * of the data set. */
static size_t preset_params(srv_jobs *J, const srv_job_config *c) {
  nn_model *tmp = NULL;
  size_t n = job_model_create(&tmp, J, c) == 0 ? tmp->n_params : 0;
  nn_model_free(tmp);
  return n;
}

static void work_cb(uv_work_t *w) {
  job *j = w->data;
  srv_jobs *J = j->J;
  char msg[700], ck[PATH_MAX + 64];
  const nn_dataset *train = NULL, *test = NULL;
  nn_model *m = NULL;
  nn_trainer *t = NULL;
  nn_workspace *ews = NULL;
  nn_err err = {0};
  int rc;
  checkpoint_path(J, j->id, ck, sizeof ck);
  /* Training yields to request handling: predictions stay fast while a job
   * runs. Linux nice values are per thread and inherited by the trainer's
   * workers. */
  setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);

  if ((rc = srv_data_get(J->data, j->cfg.dataset, NN_SPLIT_TRAIN, &train, msg, sizeof msg)) ||
      (rc = srv_data_get(J->data, j->cfg.dataset, NN_SPLIT_TEST, &test, msg, sizeof msg))) {
    fail_job(J, j, msg);
    goto out;
  }
  /* Views that stop at the limits; the buffers stay the cache's. */
  nn_dataset tv = *train, sv = *test;
  if (j->cfg.train_limit && j->cfg.train_limit < tv.n) tv.n = j->cfg.train_limit;
  if (j->cfg.test_limit && j->cfg.test_limit < sv.n) sv.n = j->cfg.test_limit;

  /* A job that never ran owns no checkpoint: a file under its id is left
   * from a job of a lost database (ids restart after a recovery) and must
   * not be resumed from after a crash. */
  if (!j->resume && unlink(ck) == 0)
    logf_(J, "job %lld: removed a stale checkpoint left under its id", (long long)j->id);
  if (j->resume && access(ck, F_OK) == 0) {
    if ((rc = nn_checkpoint_load(&m, &t, ck, &err))) {
      logf_(J, "job %lld: checkpoint unusable (%s); starting over", (long long)j->id, err.msg);
    } else {
      nn_trainer_set_threads(t, (uint32_t)J->opt.train_threads);
      nn_trainer_set_augment(t, &j->cfg.augment); /* checkpoints do not keep it */
      logf_(J, "job %lld: resuming after epoch %u", (long long)j->id, nn_trainer_epoch(t));
    }
  }
  if (!t) {
    nn_train_config tc;
    srv_train_config(&tc, j->cfg.optimizer, j->cfg.learning_rate, j->cfg.momentum,
                     j->cfg.batch_size, j->cfg.seed, (uint32_t)J->opt.train_threads);
    tc.augment = j->cfg.augment;
    if ((rc = job_model_create(&m, J, &j->cfg)) ||
        (rc = nn_trainer_create(&t, m, &tc))) {
      snprintf(msg, sizeof msg, "cannot create the model: %s", nn_strerror(rc));
      fail_job(J, j, msg);
      goto out;
    }
    nn_model_init(m, j->cfg.seed);
  }
  if ((rc = nn_workspace_create(&ews, m, 500))) {
    fail_job(J, j, "out of memory");
    goto out;
  }
  run r = {J, j, m, t, ews, tv, sv, ck, NAN, NAN};
  m = NULL;
  t = NULL;
  ews = NULL;
  if (run_epochs(&r, run_begin(&r)) == 0 && !run_stopped(&r)) run_finish(&r);
  nn_workspace_free(r.ews);
  nn_trainer_free(r.t);
  nn_model_free(r.m);
out:
  nn_workspace_free(ews);
  nn_trainer_free(t);
  nn_model_free(m);
  if (train) srv_data_put(J->data, train);
  if (test) srv_data_put(J->data, test);
}

static void schedule(srv_jobs *J);

static void after_work_cb(uv_work_t *w, int status) {
  (void)status;
  job *j = w->data;
  srv_jobs *J = j->J;
  pthread_mutex_lock(&J->mu);
  J->running--;
  if (!finished(j->state)) j->stranded = 1;
  pthread_mutex_unlock(&J->mu);
  schedule(J);
}

/* Starts queued jobs while there is room (loop thread). */
static void schedule(srv_jobs *J) {
  pthread_mutex_lock(&J->mu);
  for (job *j = J->jobs; j && !J->stopping && J->running < J->opt.max_running; j = j->next) {
    if (j->state != SRV_JOB_QUEUED && !(j->state == SRV_JOB_RUNNING && j->resume)) continue;
    if (j->work.data) continue; /* already started */
    j->work.data = j;
    atomic_store(&j->cancel, j->user_cancel); /* a cancel on record that could not end it */
    J->running++;
    uv_queue_work(J->loop, &j->work, work_cb, after_work_cb);
  }
  pthread_mutex_unlock(&J->mu);
}

/* Loop thread: wakes the streams of jobs with news, starts queued jobs. */
static void on_publish(uv_async_t *a) {
  srv_jobs *J = a->data;
  pthread_mutex_lock(&J->mu);
  for (job *j = J->jobs; j; j = j->next) {
    if (!j->dirty) continue;
    j->dirty = 0;
    for (srv_sub *s = j->subs; s; s = s->next)
      if (s->waiting) {
        s->waiting = 0;
        s->wake(s->ctx);
      }
  }
  pthread_mutex_unlock(&J->mu);
  schedule(J);
}

static void on_heartbeat(uv_timer_t *t) {
  srv_jobs *J = t->data;
  pthread_mutex_lock(&J->mu);
  for (job *j = J->jobs; j; j = j->next)
    for (srv_sub *s = j->subs; s; s = s->next) {
      s->heartbeat = 1;
      if (s->waiting) {
        s->waiting = 0;
        s->wake(s->ctx);
      }
    }
  pthread_mutex_unlock(&J->mu);
}

/* ---------------------------------------------------------------- loading */

static int load_event(uint64_t seq, uint32_t epoch, const char *type, const char *data,
                      void *u) {
  job *j = u;
  if (j->n_events == j->cap_events) {
    size_t cap = j->cap_events ? j->cap_events * 2 : 16;
    event *e = realloc(j->events, cap * sizeof *e);
    if (!e) return 1;
    j->events = e;
    j->cap_events = cap;
  }
  event *e = &j->events[j->n_events];
  e->data = strdup(data);
  if (!e->data) return 1;
  e->id = seq;
  e->epoch = epoch;
  snprintf(e->type, sizeof e->type, "%s", type);
  j->n_events++;
  if (seq > j->seq) j->seq = seq;
  return 0;
}

static int load_metric(uint32_t epoch, const char *data, void *u) {
  job *j = u;
  char **m = realloc(j->metrics, (j->n_metrics + 1) * sizeof *m);
  if (!m) return 1;
  j->metrics = m;
  if (!(j->metrics[j->n_metrics] = strdup(data))) return 1;
  j->n_metrics++;
  j->epochs_done = epoch;
  return 0;
}

static int load_job(const srv_job_row *r, void *u) {
  srv_jobs *J = u;
  job *j = calloc(1, sizeof *j);
  if (!j) return 1;
  j->J = J;
  j->id = r->id;
  int st = srv_job_state_parse(r->state);
  j->state = st < 0 ? SRV_JOB_FAILED : (srv_job_state)st;
  j->config_json = strdup(r->config_json);
  char msg[256];
  if (!j->config_json ||
      srv_job_config_parse(r->config_json, strlen(r->config_json), &j->cfg, msg, sizeof msg)) {
    /* A record this build cannot read: keep it visible, never run it. */
    srv_job_config_defaults(&j->cfg);
    if (!finished(j->state)) {
      j->state = SRV_JOB_FAILED;
      snprintf(j->error, sizeof j->error, "unreadable configuration: %s", msg);
    }
  }
  j->created_ms = r->created_ms;
  j->started_ms = r->started_ms;
  j->finished_ms = r->finished_ms;
  j->model_id = r->model_id;
  if (r->error) snprintf(j->error, sizeof j->error, "%s", r->error);
  /* The sizes of its data set come after the load (load_sizes): this runs
   * under the store's lock, which is taken after the data sets' (lock
   * order at the top). */
  srv_store_metrics_each(J->st, j->id, load_metric, j);
  srv_store_events_each(J->st, j->id, load_event, j);
  /* Numbering continues above every id that may have been handed out. */
  uint64_t mark = 0;
  srv_store_seq_reserved(J->st, j->id, &mark);
  if (mark > j->seq) j->seq = mark;
  j->reserved = j->seq;
  j->epoch = j->epochs_done;
  if (j->state == SRV_JOB_RUNNING) j->resume = 1;
  if (!finished(j->state)) srv_store_cancel_requested(J->st, j->id, &j->user_cancel);
  append(J, j);
  return 0;
}

/* What the loaded jobs need from their data sets: the parameters of
 * their network (its output layer has a unit per class) and the batches
 * of an epoch. After srv_store_jobs_each, not in load_job (lock order). */
static void load_sizes(srv_jobs *J) {
  for (job *j = J->jobs; j; j = j->next) {
    j->parameters = preset_params(J, &j->cfg);
    uint32_t tr, te;
    if (srv_data_count(J->data, j->cfg.dataset, &tr, &te) == 0) {
      if (j->cfg.train_limit && j->cfg.train_limit < tr) tr = j->cfg.train_limit;
      j->batches = (tr + j->cfg.batch_size - 1) / j->cfg.batch_size;
    }
  }
}

/* Removes what interrupted work left behind: temporary files of atomic
 * saves, and checkpoints of jobs that are finished (a crash after the
 * final record, before the unlink). Checkpoints of unknown jobs stay. */
static void clean_orphans(srv_jobs *J) {
  static const char *const SUB[] = {"checkpoints", "models"};
  for (int k = 0; k < 2; k++) {
    char dir[PATH_MAX + 32], p[PATH_MAX + 320];
    snprintf(dir, sizeof dir, "%s/%s", J->state_dir, SUB[k]);
    DIR *d = opendir(dir);
    if (!d) continue;
    struct dirent *de;
    while ((de = readdir(d))) {
      const char *n = de->d_name;
      int tmp = strstr(n, ".tmp.") != NULL;
      char *end;
      long long id = k == 0 && !tmp ? strtoll(n, &end, 10) : 0;
      job *j = id > 0 && !strcmp(end, ".ckpt") ? find(J, id) : NULL;
      if (!tmp && !(j && finished(j->state))) continue;
      snprintf(p, sizeof p, "%s/%s", dir, n);
      if (unlink(p) == 0)
        logf_(J, "removed %s (%s)", p, tmp ? "an interrupted save" : "the job has finished");
    }
    closedir(d);
  }
}

/* Jobs a client cancelled (the request is on record) whose end a crash
 * prevented: they end cancelled now, before anything resumes them. If that
 * cannot be recorded, the cancel flag stops them at their first batch. */
static void finish_cancelled(srv_jobs *J) {
  pthread_mutex_lock(&J->mu);
  for (job *j = J->jobs; j; j = j->next) {
    if (finished(j->state) || !j->user_cancel) continue;
    if (set_state(J, j, SRV_JOB_CANCELLED)) continue;
    j->resume = 0;
    logf_(J, "job %lld: cancelled before the restart (the request is on record); it ends cancelled",
          (long long)j->id);
  }
  pthread_mutex_unlock(&J->mu);
}

/* The seed's job, when there is no model: not without data (it would only
 * fail), and not again after a bootstrap job failed or was cancelled (each
 * restart would add one more failure). */
static void bootstrap(srv_jobs *J) {
  uint32_t tr, te;
  if (srv_data_count(J->data, "mnist", &tr, &te)) {
    logf_(J, "no model and no MNIST data: not queueing the bootstrap job");
    return;
  }
  char buf[32];
  if (srv_store_setting_get(J->st, "bootstrap_job", buf, sizeof buf) == 0) {
    job *old = find(J, atoll(buf));
    if (old && (old->state == SRV_JOB_FAILED || old->state == SRV_JOB_CANCELLED)) {
      logf_(J, "no model: bootstrap job %lld %s earlier; not queueing another (submit a job)",
            (long long)old->id, srv_job_state_name(old->state));
      return;
    }
  }
  srv_job_config c;
  srv_job_config_defaults(&c);
  c.activate = SRV_ACTIVATE_ALWAYS;
  int64_t id;
  if (srv_jobs_submit(J, &c, &id) == 0) {
    snprintf(buf, sizeof buf, "%lld", (long long)id);
    srv_store_setting_set(J->st, "bootstrap_job", buf);
    logf_(J, "no model yet: queued bootstrap job %lld (the seed's settings, 4 epochs)",
          (long long)id);
  }
}

int srv_jobs_open(srv_jobs **out, uv_loop_t *loop, srv_store *st, srv_models *models,
                  srv_data *data, const srv_jobs_options *opt) {
  *out = NULL;
  srv_jobs *J = calloc(1, sizeof *J);
  if (!J) return -ENOMEM;
  pthread_mutex_init(&J->mu, NULL);
  J->loop = loop;
  J->st = st;
  J->models = models;
  J->data = data;
  J->opt = *opt;
  if (J->opt.max_running < 1) J->opt.max_running = 1;
  if (J->opt.train_threads < 1) J->opt.train_threads = 1;
  snprintf(J->state_dir, sizeof J->state_dir, "%s", opt->state_dir);
  char sub[PATH_MAX + 16];
  snprintf(sub, sizeof sub, "%s/checkpoints", opt->state_dir);
  int rc = srv_mkdir_durable(sub, 0750);
  if (rc) {
    pthread_mutex_destroy(&J->mu);
    free(J);
    return rc;
  }
  rc = srv_store_jobs_each(st, load_job, J);
  if (rc) {
    srv_jobs_close(J);
    return rc;
  }
  load_sizes(J);
  uv_async_init(loop, &J->publish, on_publish);
  J->publish.data = J;
  uv_timer_init(loop, &J->heartbeat);
  J->heartbeat.data = J;
  finish_cancelled(J); /* events wake the loop: after the handles exist */
  clean_orphans(J);
  int pending = 0;
  for (job *j = J->jobs; j; j = j->next) {
    if (j->resume) logf_(J, "job %lld was interrupted after epoch %u; it will resume",
                         (long long)j->id, j->epochs_done);
    pending |= !finished(j->state);
  }
  uv_timer_start(&J->heartbeat, on_heartbeat, HEARTBEAT_MS, HEARTBEAT_MS);
  *out = J;
  if (opt->bootstrap && !pending && srv_models_active_id(models) == 0) bootstrap(J);
  uv_async_send(&J->publish); /* schedules once the loop runs */
  return 0;
}

static void close_noop(uv_handle_t *h) { (void)h; }

void srv_jobs_shutdown(srv_jobs *J) {
  pthread_mutex_lock(&J->mu);
  J->stopping = 1;
  for (job *j = J->jobs; j; j = j->next) {
    if (j->work.data && !finished(j->state)) {
      j->shutdown = 1;
      atomic_store(&j->cancel, 1);
    }
    for (srv_sub *s = j->subs; s; s = s->next) {
      s->closing = 1;
      if (s->waiting) {
        s->waiting = 0;
        s->wake(s->ctx);
      }
    }
  }
  pthread_mutex_unlock(&J->mu);
  uv_timer_stop(&J->heartbeat);
}

int srv_jobs_idle(srv_jobs *J) {
  pthread_mutex_lock(&J->mu);
  int idle = J->running == 0;
  pthread_mutex_unlock(&J->mu);
  return idle;
}

void srv_jobs_set_notify(srv_jobs *J, void (*cb)(void *, int64_t, const char *), void *u) {
  pthread_mutex_lock(&J->mu);
  J->on_state = cb;
  J->on_state_u = u;
  pthread_mutex_unlock(&J->mu);
}

void srv_jobs_close_handles(srv_jobs *J) {
  if (J->handles_closed) return;
  J->handles_closed = 1;
  uv_close((uv_handle_t *)&J->heartbeat, close_noop);
  uv_close((uv_handle_t *)&J->publish, close_noop);
}

void srv_jobs_close(srv_jobs *J) {
  if (!J) return;
  for (job *j = J->jobs, *n; j; j = n) {
    n = j->next;
    /* Streams still open belong to connections MHD has already closed. */
    job_free(j);
  }
  pthread_mutex_destroy(&J->mu);
  free(J);
}

/* ---------------------------------------------------------------- API */

int srv_jobs_submit(srv_jobs *J, const srv_job_config *cfg, int64_t *id) {
  job *j = calloc(1, sizeof *j);
  if (!j) return -ENOMEM;
  j->J = J;
  j->cfg = *cfg;
  j->config_json = srv_job_config_json(cfg);
  if (!j->config_json) {
    free(j);
    return -ENOMEM;
  }
  j->parameters = preset_params(J, cfg);
  j->created_ms = wall_ms();
  pthread_mutex_lock(&J->mu);
  /* An uploaded set is checked under the jobs lock, which a delete of it
   * holds too (srv_jobs_dataset_delete): either the job is queued on a set
   * that stays until it ends, or it is refused here. */
  uint32_t tr, te;
  int rc = srv_dataset_is_builtin(cfg->dataset) ? 0 : srv_data_count(J->data, cfg->dataset, &tr, &te);
  if (rc) {
    pthread_mutex_unlock(&J->mu);
    free(j->config_json);
    free(j);
    return -ENOENT;
  }
  /* Insert under the jobs lock so ids and list order agree. */
  rc = srv_store_job_insert(J->st, j->config_json, j->created_ms, &j->id);
  if (rc) {
    pthread_mutex_unlock(&J->mu);
    free(j->config_json);
    free(j);
    return rc;
  }
  j->state = SRV_JOB_QUEUED;
  append(J, j);
  emit(J, j, "state", 0, state_event(j));
  *id = j->id;
  pthread_mutex_unlock(&J->mu);
  return 0;
}

int srv_jobs_dataset_delete(srv_jobs *J, const char *name, int64_t *user) {
  pthread_mutex_lock(&J->mu);
  int rc = 0;
  for (job *j = J->jobs; j && !rc; j = j->next)
    if (!finished(j->state) && !strcmp(j->cfg.dataset, name)) {
      *user = j->id;
      rc = -EBUSY;
    }
  /* Decided here, under the jobs lock that srv_jobs_submit holds to check
   * the set (K5a): from this mark on a submit naming it is refused. The
   * disk work (SQLite commit, unlink, fsync) comes after the lock, so job
   * progress and listings do not wait for it. */
  if (!rc) rc = srv_data_delete_begin(J->data, name);
  pthread_mutex_unlock(&J->mu);
  if (!rc) rc = srv_data_delete_finish(J->data, name);
  return rc;
}

int srv_jobs_cancel(srv_jobs *J, int64_t id) {
  pthread_mutex_lock(&J->mu);
  job *j = find(J, id);
  int rc = 0, ended = 0;
  if (!j) rc = -ENOENT;
  else if (finished(j->state)) rc = -EALREADY;
  else if (j->work.data && !j->stranded) {
    /* The runner sets the state at its next batch; until then the request
     * is on record, so a crash in between cannot resume the job. When it
     * cannot be recorded (a full disk) the job still stops: the caller
     * says the cancel would not survive a crash before the job's end. */
    rc = srv_store_cancel_request(J->st, j->id, wall_ms());
    if (rc)
      logf_(J, "job %lld: could not record the cancel: %s; stopping it anyway", (long long)j->id,
            srv_store_errmsg(J->st));
    else srv_crash_point("cancel_requested");
    j->user_cancel = 1;
    atomic_store(&j->cancel, 1);
  }
  /* Not started yet, or stranded: nothing else will end it. */
  else if (!(rc = set_state(J, j, SRV_JOB_CANCELLED)))
    ended = 1;
  pthread_mutex_unlock(&J->mu);
  /* Its end is on record: a checkpoint it left (stranded after its end
   * could not be recorded, or interrupted and not resumed yet) is never
   * resumed from, so it goes now rather than at the next start. */
  if (ended) {
    char ck[PATH_MAX + 64];
    checkpoint_path(J, id, ck, sizeof ck);
    if (unlink(ck) == 0) logf_(J, "job %lld cancelled: removed its checkpoint", (long long)id);
  }
  return rc;
}

char *srv_iso8601(int64_t ms, char *buf, size_t len) {
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

static void add_time(cJSON *o, const char *k, int64_t ms) {
  char buf[32];
  if (ms) cJSON_AddStringToObject(o, k, srv_iso8601(ms, buf, sizeof buf));
  else cJSON_AddNullToObject(o, k);
}

static cJSON *job_json(const job *j) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "id", (double)j->id);
  cJSON_AddStringToObject(o, "state", srv_job_state_name(j->state));
  cJSON *cfg = cJSON_Parse(j->config_json);
  if (cfg) cJSON_AddItemToObject(o, "config", cfg);
  cJSON_AddNumberToObject(o, "parameters", (double)j->parameters);
  cJSON *p = cJSON_AddObjectToObject(o, "progress");
  cJSON_AddNumberToObject(p, "epoch", j->state == SRV_JOB_RUNNING ? j->epoch : j->epochs_done);
  cJSON_AddNumberToObject(p, "epochs", j->cfg.epochs);
  cJSON_AddNumberToObject(p, "epochs_done", j->epochs_done);
  cJSON_AddNumberToObject(p, "batch", j->state == SRV_JOB_RUNNING ? j->batch : 0);
  cJSON_AddNumberToObject(p, "batches", j->batches);
  if (j->state == SRV_JOB_RUNNING) {
    cJSON_AddNumberToObject(p, "samples_per_second", round(j->sps));
    cJSON_AddNumberToObject(p, "eta_seconds", round(j->eta * 10) / 10);
  }
  cJSON *ms = cJSON_AddArrayToObject(o, "metrics");
  for (uint32_t i = 0; i < j->n_metrics; i++) {
    cJSON *r = cJSON_Parse(j->metrics[i]);
    if (r) cJSON_AddItemToArray(ms, r);
  }
  if (j->model_id) cJSON_AddNumberToObject(o, "model_id", (double)j->model_id);
  else cJSON_AddNullToObject(o, "model_id");
  if (j->error[0]) cJSON_AddStringToObject(o, "error", j->error);
  else cJSON_AddNullToObject(o, "error");
  add_time(o, "created_at", j->created_ms);
  add_time(o, "started_at", j->started_ms);
  add_time(o, "finished_at", j->finished_ms);
  return o;
}

cJSON *srv_jobs_json(srv_jobs *J, int64_t id) {
  pthread_mutex_lock(&J->mu);
  job *j = find(J, id);
  cJSON *o = j ? job_json(j) : NULL;
  pthread_mutex_unlock(&J->mu);
  return o;
}

cJSON *srv_jobs_list_json(srv_jobs *J, int state, int limit) {
  cJSON *arr = cJSON_CreateArray();
  pthread_mutex_lock(&J->mu);
  /* The list is in id order; walk it into a small array to go backwards. */
  size_t n = 0;
  for (job *j = J->jobs; j; j = j->next) n++;
  job **v = malloc((n ? n : 1) * sizeof *v);
  if (v) {
    size_t i = 0;
    for (job *j = J->jobs; j; j = j->next) v[i++] = j;
    int added = 0;
    for (size_t k = n; k-- > 0 && added < limit;) {
      if (state >= 0 && (int)v[k]->state != state) continue;
      cJSON_AddItemToArray(arr, job_json(v[k]));
      added++;
    }
    free(v);
  }
  pthread_mutex_unlock(&J->mu);
  return arr;
}

void srv_jobs_counts(srv_jobs *J, int counts[SRV_JOB_NSTATES], double *sps, uint64_t *total) {
  memset(counts, 0, SRV_JOB_NSTATES * sizeof *counts);
  if (!J) { /* a replica trains nothing */
    *sps = 0;
    *total = 0;
    return;
  }
  pthread_mutex_lock(&J->mu);
  double cur = 0;
  for (job *j = J->jobs; j; j = j->next) {
    counts[j->state]++;
    if (j->state == SRV_JOB_RUNNING) cur += j->sps;
  }
  *sps = cur;
  *total = J->samples_total;
  pthread_mutex_unlock(&J->mu);
}

void srv_jobs_pending_note(srv_jobs *J, char *buf, size_t len) {
  buf[0] = 0;
  if (!J) return;
  pthread_mutex_lock(&J->mu);
  for (job *j = J->jobs; j; j = j->next) {
    if (j->state == SRV_JOB_RUNNING) {
      snprintf(buf, len, "job %lld is training (epoch %u of %u)", (long long)j->id,
               j->epoch ? j->epoch : 1, j->cfg.epochs);
      break;
    }
    if (j->state == SRV_JOB_QUEUED && !buf[0])
      snprintf(buf, len, "job %lld is queued", (long long)j->id);
  }
  pthread_mutex_unlock(&J->mu);
}

/* ---------------------------------------------------------------- streams */

int srv_parse_event_id(const char *s, uint64_t *out) {
  while (*s == ' ' || *s == '\t') s++;
  uint64_t v = 0;
  const char *p = s;
  for (; *p >= '0' && *p <= '9'; p++) {
    v = v * 10 + (uint64_t)(*p - '0');
    if (v > 9007199254740991ull) return -EINVAL;
  }
  if (p == s) return -EINVAL;
  while (*p == ' ' || *p == '\t') p++;
  if (*p) return -EINVAL;
  *out = v;
  return 0;
}

int srv_sub_open(srv_jobs *J, int64_t id, uint64_t last_id, int ndjson, void (*wake)(void *),
                 void *ctx, srv_sub **out) {
  srv_sub *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  pthread_mutex_lock(&J->mu);
  job *j = find(J, id);
  if (!j) {
    pthread_mutex_unlock(&J->mu);
    free(s);
    return -ENOENT;
  }
  s->J = J;
  s->j = j;
  s->last = last_id;
  s->ndjson = ndjson;
  s->wake = wake;
  s->ctx = ctx;
  s->closing = J->stopping;
  s->next = j->subs;
  j->subs = s;
  J->n_subs++;
  pthread_mutex_unlock(&J->mu);
  *out = s;
  return 0;
}

void srv_sub_close(srv_sub *s) {
  if (!s) return;
  srv_jobs *J = s->J;
  pthread_mutex_lock(&J->mu);
  for (srv_sub **pp = &s->j->subs; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  J->n_subs--;
  pthread_mutex_unlock(&J->mu);
  free(s->pending);
  free(s);
}

int srv_jobs_subscribers(srv_jobs *J) {
  if (!J) return 0;
  pthread_mutex_lock(&J->mu);
  int n = J->n_subs;
  pthread_mutex_unlock(&J->mu);
  return n;
}

/* Formats one event for the wire. */
static char *frame(const event *e, int ndjson, size_t *len) {
  size_t n = strlen(e->data) + strlen(e->type) + 64;
  char *b = malloc(n);
  if (!b) return NULL;
  int w = ndjson ? snprintf(b, n, "{\"id\":%llu,\"event\":\"%s\",\"data\":%s}\n",
                            (unsigned long long)e->id, e->type, e->data)
                 : snprintf(b, n, "id: %llu\nevent: %s\ndata: %s\n\n",
                            (unsigned long long)e->id, e->type, e->data);
  *len = w < 0 ? 0 : (size_t)w < n ? (size_t)w : n - 1; /* never past what was written */
  return b;
}

ssize_t srv_sub_read(srv_sub *s, char *buf, size_t max, void (*suspend)(void *)) {
  srv_jobs *J = s->J;
  pthread_mutex_lock(&J->mu);
  job *j = s->j;
  ssize_t out = 0;
  if (!s->pending || s->pending_off == s->pending_len) {
    free(s->pending);
    s->pending = NULL;
    s->pending_len = s->pending_off = 0;
    const event *next = NULL;
    for (size_t i = 0; i < j->n_events; i++)
      if (j->events[i].id > s->last) {
        next = &j->events[i];
        break;
      }
    if (next) {
      s->pending = frame(next, s->ndjson, &s->pending_len);
      s->last = next->id;
      if (!s->pending) {
        out = -1;
        goto done;
      }
    } else if (finished(j->state) || s->closing) {
      out = -1; /* everything up to "end" is out */
      goto done;
    } else if (s->heartbeat) {
      s->heartbeat = 0;
      const char *hb = s->ndjson ? "\n" : ": heartbeat\n\n";
      s->pending = strdup(hb);
      s->pending_len = s->pending ? strlen(hb) : 0;
    } else {
      s->waiting = 1;
      suspend(s->ctx);
      goto done;
    }
  }
  size_t n = s->pending_len - s->pending_off;
  if (n > max) n = max;
  memcpy(buf, s->pending + s->pending_off, n);
  s->pending_off += n;
  out = (ssize_t)n;
done:
  pthread_mutex_unlock(&J->mu);
  return out;
}
