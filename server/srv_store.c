/* SQLite persistence. Statements are prepared per call: the daemon writes a
 * few rows a second at most, and it keeps the code obvious. */
#include "srv_store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct srv_store {
  sqlite3 *db;
  /* Innermost of the daemon's locks (the order: top of srv_jobs.c): the
   * *_each callbacks run under it and must take no other. */
  pthread_mutex_t mu;
  int fresh;              /* created empty by this open */
  int readonly;           /* srv_store_open_readonly: no checkpoint at close */
  struct stat snap;       /* the file as the immutable open found it (.st_ino 0: WAL open) */
  char aside[4200];       /* where a damaged database went; "" if none */
};

int srv_fail_point(const char *name) {
  const char *k = getenv("MNISTD_FAIL_AT");
  return k && !strcmp(k, name);
}

void srv_crash_point(const char *name) {
  const char *k = getenv("MNISTD_CRASH_AT");
  if (k && !strcmp(k, name)) {
    fprintf(stderr, "MNISTD_CRASH_AT=%s: killing myself\n", name);
    kill(getpid(), SIGKILL);
  }
  const char *t = getenv("MNISTD_TERM_AT");
  if (t && !strcmp(t, name)) {
    fprintf(stderr, "MNISTD_TERM_AT=%s: sending SIGTERM to myself\n", name);
    kill(getpid(), SIGTERM);
  }
}

void srv_hold_point(const char *name) {
  const char *k = getenv("MNISTD_HOLD_AT"), *f = getenv("MNISTD_HOLD_FILE");
  if (!k || !f || strcmp(k, name)) return;
  char reached[PATH_MAX];
  snprintf(reached, sizeof reached, "%s.reached", f);
  int fd = open(reached, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) close(fd);
  fprintf(stderr, "MNISTD_HOLD_AT=%s: holding while %s exists\n", name, f);
  while (access(f, F_OK) == 0) usleep(10000);
}

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS jobs ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL, config TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL, started_ms INTEGER, finished_ms INTEGER,"
    " model_id INTEGER, error TEXT);"
    "CREATE TABLE IF NOT EXISTS metrics ("
    " job INTEGER NOT NULL, epoch INTEGER NOT NULL, data TEXT NOT NULL,"
    " PRIMARY KEY (job, epoch));"
    "CREATE TABLE IF NOT EXISTS events ("
    " job INTEGER NOT NULL, seq INTEGER NOT NULL, epoch INTEGER NOT NULL,"
    " type TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job, seq));"
    "CREATE TABLE IF NOT EXISTS models ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, arch TEXT NOT NULL, dataset TEXT NOT NULL,"
    " parameters INTEGER NOT NULL, test_accuracy REAL, test_loss REAL,"
    " job_id INTEGER, created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS job_seq (job INTEGER PRIMARY KEY, reserved INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS datasets (name TEXT PRIMARY KEY, info TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS job_cancel (job INTEGER PRIMARY KEY, requested_ms INTEGER NOT NULL);";

static int map_rc(int rc) {
  switch (rc & 0xff) {
  case SQLITE_OK: case SQLITE_DONE: case SQLITE_ROW: return 0;
  case SQLITE_FULL: return -ENOSPC;
  case SQLITE_NOMEM: return -ENOMEM;
  case SQLITE_NOTFOUND: return -ENOENT;
  default: return -EIO;
  }
}

int srv_fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  int rc = fsync(fd) < 0 ? -errno : 0;
  close(fd);
  return rc;
}

int srv_mkdir_durable(const char *dir, mode_t mode) {
  if (mkdir(dir, mode) == 0) {
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    /* "a/b/" names a/b: strip trailing slashes first. */
    while (slash && slash > parent && slash[1] == 0) {
      *slash = 0;
      slash = strrchr(parent, '/');
    }
    const char *p = !slash ? "." : slash == parent ? "/" : (*slash = 0, parent);
    return srv_fsync_dir(p);
  }
  if (errno != EEXIST) return -errno;
  struct stat sb;
  if (stat(dir, &sb) < 0) return -errno;
  return S_ISDIR(sb.st_mode) ? 0 : -ENOTDIR;
}

/* Opens path and makes sure the schema is there and the file is sound.
 * Returns the SQLite code; *damaged is set when the file itself is bad (as
 * opposed to a lock, a permission or a full disk). */
static int try_open(srv_store *s, const char *path, int check, int *damaged, char *msg,
                    size_t msglen) {
  *damaged = 0;
  int rc = sqlite3_open_v2(path, &s->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           NULL);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(s->db, 5000);
    rc = sqlite3_exec(s->db,
                      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                      "PRAGMA foreign_keys=ON;",
                      NULL, NULL, NULL);
  }
  if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, SCHEMA, NULL, NULL, NULL);
  if (rc == SQLITE_OK && check) {
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(s->db, "PRAGMA integrity_check", -1, &st, NULL);
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(st);
      if (rc == SQLITE_ROW) {
        const char *r = (const char *)sqlite3_column_text(st, 0);
        rc = r && !strcmp(r, "ok") ? SQLITE_OK : SQLITE_CORRUPT;
        if (rc) snprintf(msg, msglen, "%s: integrity check: %s", path, r ? r : "?");
      }
      sqlite3_finalize(st);
    }
  }
  if (rc != SQLITE_OK) {
    int prim = rc & 0xff;
    *damaged = prim == SQLITE_CORRUPT || prim == SQLITE_NOTADB;
    if (!msg[0] || !*damaged)
      snprintf(msg, msglen, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
    sqlite3_close(s->db);
    s->db = NULL;
  }
  return rc;
}

/* Renames the damaged database and its WAL files out of the way. */
static int move_aside(srv_store *s, const char *dir, const char *path) {
  char stamp[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  for (int i = 0; i < 100; i++) {
    if (i) snprintf(s->aside, sizeof s->aside, "%s.damaged-%s.%d", path, stamp, i);
    else snprintf(s->aside, sizeof s->aside, "%s.damaged-%s", path, stamp);
    if (access(s->aside, F_OK) < 0) break;
  }
  if (rename(path, s->aside) < 0) return -errno;
  static const char *const SUFFIX[] = {"-wal", "-shm"};
  for (int i = 0; i < 2; i++) {
    char from[4200], to[4300];
    snprintf(from, sizeof from, "%s%s", path, SUFFIX[i]);
    snprintf(to, sizeof to, "%s%s", s->aside, SUFFIX[i]);
    if (rename(from, to) < 0 && errno != ENOENT) return -errno;
  }
  return srv_fsync_dir(dir);
}

int srv_store_open(srv_store **out, const char *dir, char *msg, size_t msglen) {
  return srv_store_open_flags(out, dir, -1, msg, msglen);
}

/* Recursive: the *_each callbacks may read other tables (loading a job
 * reads its metrics and events while the job walk is under way). */
static void init_mu(srv_store *s) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&s->mu, &attr);
  pthread_mutexattr_destroy(&attr);
}

int srv_store_open_flags(srv_store **out, const char *dir, int flags, char *msg, size_t msglen) {
  /* flags -1: a reader beside the daemon (no integrity pass, no recovery) */
  int check = flags >= 0, recover = flags > 0 && (flags & SRV_STORE_RECOVER);
  *out = NULL;
  char path[4096];
  msg[0] = 0;
  int mk = srv_mkdir_durable(dir, 0750);
  if (mk) {
    snprintf(msg, msglen, "cannot create state directory %s: %s", dir, strerror(-mk));
    return mk;
  }
  snprintf(path, sizeof path, "%s/mnistd.db", dir);
  srv_store *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  struct stat sb;
  int exists = stat(path, &sb) == 0;
  s->fresh = !exists;
  int damaged = 0, rc;
  if (!recover && exists && sb.st_size == 0) {
    /* Never turn it into a new, sound database behind the daemon's back:
     * the daemon's next start must see the damage and recover. */
    snprintf(msg, msglen, "%s: the file is empty (damaged); the daemon moves it aside and "
             "recovers at its next start", path);
    free(s);
    return -EIO;
  }
  if (recover && exists && sb.st_size == 0) {
    /* SQLite would take it for a new database; it is a damaged one (this
     * daemon never leaves an empty file), and the model files beside it
     * must be registered again. */
    rc = SQLITE_CORRUPT;
    damaged = 1;
    snprintf(msg, msglen, "%s: the file is empty", path);
  } else {
    rc = try_open(s, path, check, &damaged, msg, msglen);
  }
  if (rc != SQLITE_OK && damaged && recover) {
    char why[512];
    snprintf(why, sizeof why, "%s", msg);
    int mv = move_aside(s, dir, path);
    if (mv) {
      snprintf(msg, msglen, "%s; moving it aside failed: %s", why, strerror(-mv));
      free(s);
      return -EIO;
    }
    s->fresh = 1;
    msg[0] = 0;
    rc = try_open(s, path, check, &damaged, msg, msglen);
    if (rc == SQLITE_OK) snprintf(msg, msglen, "%s", why); /* the reason, for the log */
  }
  if (rc != SQLITE_OK) {
    free(s);
    return map_rc(rc) ? map_rc(rc) : -EIO;
  }
  if (s->fresh) srv_fsync_dir(dir); /* the new database file's entry */
  init_mu(s);
  *out = s;
  return 0;
}

/* path as an SQLite URI file name: anything but the unreserved characters
 * percent-encoded ('?', '#' and '%' would end or bend the path). */
static int uri_path(const char *path, const char *query, char *out, size_t len) {
  static const char HEX[] = "0123456789ABCDEF";
  size_t o = (size_t)snprintf(out, len, "file:");
  for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
    if (o + 4 >= len) return -ENAMETOOLONG;
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
        strchr("/._-~", *p))
      out[o++] = (char)*p;
    else {
      out[o++] = '%';
      out[o++] = HEX[*p >> 4];
      out[o++] = HEX[*p & 15];
    }
  }
  int n = snprintf(out + o, len - o, "?%s", query);
  return n < 0 || (size_t)n >= len - o ? -ENAMETOOLONG : 0;
}

int srv_store_open_readonly(srv_store **out, const char *dir, char *msg, size_t msglen) {
  char path[4096], wal[4200], shm[4200], uri[3 * 4200];
  struct stat sb, wb;
  *out = NULL;
  msg[0] = 0;
  snprintf(path, sizeof path, "%s/mnistd.db", dir);
  snprintf(wal, sizeof wal, "%s-wal", path);
  snprintf(shm, sizeof shm, "%s-shm", path);
  if (stat(path, &sb) < 0) {
    int rc = -errno;
    if (rc == -ENOENT)
      snprintf(msg, msglen, "%s: no daemon state here (no mnistd.db): give the --state-dir of "
               "the daemon the data set was uploaded to (mnistd serve --state-dir DIR)", dir);
    else snprintf(msg, msglen, "%s: %s", path, strerror(-rc));
    return rc;
  }
  if (sb.st_size == 0) {
    snprintf(msg, msglen, "%s: the file is empty (damaged); the daemon moves it aside and "
             "recovers at its next start", path);
    return -EIO;
  }
  int has_wal = stat(wal, &wb) == 0, rc;
  if (has_wal && access(shm, F_OK) < 0) {
    /* SQLite would create the index file, owned by this user: a daemon
     * running as another one could then not open its own database. */
    snprintf(msg, msglen, "%s has a write-ahead log but no %s: start the daemon on %s once "
             "(it folds the log back), or stop it cleanly, then try again", path, shm, dir);
    return -EAGAIN;
  }
  /* With its log (a daemon running, or killed): read through the log and
   * its index, which SQLite only reads (and the index's header repairs).
   * Without one (the daemon stopped cleanly and folded it back), a plain
   * read-only open would still create an empty -wal and -shm and leave
   * them; "immutable" reads the file alone, which holds everything. A
   * daemon starting meanwhile writes to a new log, not to this file, until
   * a checkpoint: srv_store_readonly_changed tells a reader to read again. */
  if ((rc = uri_path(path, has_wal ? "mode=ro" : "immutable=1", uri, sizeof uri))) {
    snprintf(msg, msglen, "%s: path too long", path);
    return rc;
  }
  srv_store *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->readonly = 1;
  if (!has_wal) s->snap = sb;
  int sq = sqlite3_open_v2(uri, &s->db,
                           SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_FULLMUTEX, NULL);
  if (sq == SQLITE_OK) sqlite3_busy_timeout(s->db, 5000);
  /* Read now, not at the caller's first query: SQLite decides between the
   * log and the file alone at its first read, and the log checked for
   * above must still be there then (a daemon stopping in between would
   * leave SQLite to create a new one). Also names a damaged file here. */
  if (sq == SQLITE_OK)
    sq = sqlite3_exec(s->db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
  if (sq != SQLITE_OK) {
    snprintf(msg, msglen, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
    sqlite3_close(s->db);
    free(s);
    return map_rc(sq) ? map_rc(sq) : -EIO;
  }
  init_mu(s);
  *out = s;
  return 0;
}

int srv_store_readonly_changed(srv_store *s, const char *dir) {
  if (!s || !s->snap.st_ino) return 0;
  char path[4096];
  struct stat sb;
  snprintf(path, sizeof path, "%s/mnistd.db", dir);
  return stat(path, &sb) < 0 || sb.st_ino != s->snap.st_ino || sb.st_size != s->snap.st_size ||
         sb.st_mtim.tv_sec != s->snap.st_mtim.tv_sec ||
         sb.st_mtim.tv_nsec != s->snap.st_mtim.tv_nsec;
}

int srv_store_recovered(srv_store *s, char *aside, size_t len) {
  if (!s || !s->aside[0]) return 0;
  if (aside) snprintf(aside, len, "%s", s->aside);
  return 1;
}

int srv_store_fresh(srv_store *s) { return s->fresh; }

void srv_store_close(srv_store *s) {
  if (!s) return;
  /* Folds the WAL back so the directory holds one self-contained file
   * (the daemon's; a read-only reader leaves the daemon's files alone). */
  if (!s->readonly) sqlite3_exec(s->db, "PRAGMA wal_checkpoint(TRUNCATE);", NULL, NULL, NULL);
  sqlite3_close(s->db);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* Copied under the lock: sqlite3_errmsg's buffer belongs to the connection
 * and another thread's next statement rewrites it. */
const char *srv_store_errmsg(srv_store *s) {
  static _Thread_local char buf[256];
  if (!s) return "no store";
  pthread_mutex_lock(&s->mu);
  snprintf(buf, sizeof buf, "%s", sqlite3_errmsg(s->db));
  pthread_mutex_unlock(&s->mu);
  return buf;
}

int srv_store_check(srv_store *s) {
  pthread_mutex_lock(&s->mu);
  sqlite3_stmt *st;
  int ok = 0;
  if (sqlite3_prepare_v2(s->db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW)
      ok = !strcmp((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&s->mu);
  return ok ? 0 : -EIO;
}

/* Binds "?" parameters from a format: i = int64, t = text (NULL -> NULL),
 * d = double, z = int64 where 0 means NULL. */
static int bind_fmt(sqlite3_stmt *st, const char *fmt, va_list ap) {
  for (int i = 1; *fmt; fmt++, i++) {
    int rc;
    switch (*fmt) {
    case 'i': rc = sqlite3_bind_int64(st, i, va_arg(ap, int64_t)); break;
    case 'z': {
      int64_t v = va_arg(ap, int64_t);
      rc = v ? sqlite3_bind_int64(st, i, v) : sqlite3_bind_null(st, i);
      break;
    }
    case 'd': {
      double v = va_arg(ap, double);
      rc = isfinite(v) ? sqlite3_bind_double(st, i, v) : sqlite3_bind_null(st, i);
      break;
    }
    case 't': {
      const char *v = va_arg(ap, const char *);
      rc = v ? sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
      break;
    }
    default: return SQLITE_MISUSE;
    }
    if (rc != SQLITE_OK) return rc;
  }
  return SQLITE_OK;
}

/* Runs one statement that returns no rows; the caller holds the mutex. */
static int exec_locked(srv_store *s, const char *sql, const char *fmt, ...) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) return map_rc(rc);
  va_list ap;
  va_start(ap, fmt);
  rc = bind_fmt(st, fmt, ap);
  va_end(ap);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : map_rc(rc) ? map_rc(rc) : -EIO;
}

int srv_store_job_insert(srv_store *s, const char *config_json, int64_t created_ms,
                         int64_t *id) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "INSERT INTO jobs (state, config, created_ms) VALUES ('queued', ?, ?)",
                       "ti", config_json, created_ms);
  if (!rc) *id = sqlite3_last_insert_rowid(s->db);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

static int job_update_locked(srv_store *s, const srv_job_row *r) {
  return exec_locked(s,
                     "UPDATE jobs SET state=?, started_ms=?, finished_ms=?, model_id=?, "
                     "error=? WHERE id=?",
                     "tzzzti", r->state, r->started_ms, r->finished_ms, r->model_id, r->error,
                     r->id);
}

int srv_store_job_update(srv_store *s, const srv_job_row *row) {
  pthread_mutex_lock(&s->mu);
  int rc = job_update_locked(s, row);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

static const char *col_text(sqlite3_stmt *st, int i) {
  return (const char *)sqlite3_column_text(st, i);
}

/* NULL (or a stored non-number) reads as NaN = unknown, never as 0. */
static double col_real(sqlite3_stmt *st, int i) {
  int t = sqlite3_column_type(st, i);
  if (t != SQLITE_FLOAT && t != SQLITE_INTEGER) return NAN;
  double v = sqlite3_column_double(st, i);
  return isfinite(v) ? v : NAN;
}

int srv_store_jobs_each(srv_store *s, int (*cb)(const srv_job_row *, void *), void *user) {
  pthread_mutex_lock(&s->mu);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db,
                              "SELECT id, state, config, created_ms, started_ms, finished_ms,"
                              " model_id, error FROM jobs ORDER BY id",
                              -1, &st, NULL);
  if (rc == SQLITE_OK) {
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      srv_job_row r = {sqlite3_column_int64(st, 0), col_text(st, 1), col_text(st, 2),
                       sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4),
                       sqlite3_column_int64(st, 5), sqlite3_column_int64(st, 6),
                       col_text(st, 7)};
      if (cb(&r, user)) {
        rc = SQLITE_DONE;
        break;
      }
    }
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&s->mu);
  return map_rc(rc);
}

int srv_store_metric_put(srv_store *s, int64_t job, uint32_t epoch, const char *json) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "INSERT OR REPLACE INTO metrics (job, epoch, data) VALUES (?, ?, ?)",
                       "iit", job, (int64_t)epoch, json);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_metrics_each(srv_store *s, int64_t job,
                           int (*cb)(uint32_t, const char *, void *), void *user) {
  pthread_mutex_lock(&s->mu);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, "SELECT epoch, data FROM metrics WHERE job=? ORDER BY epoch",
                              -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, job);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
      if (cb((uint32_t)sqlite3_column_int64(st, 0), col_text(st, 1), user)) {
        rc = SQLITE_DONE;
        break;
      }
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&s->mu);
  return map_rc(rc);
}

int srv_store_event_add(srv_store *s, int64_t job, uint64_t seq, uint32_t epoch,
                        const char *type, const char *json) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s,
                       "INSERT OR REPLACE INTO events (job, seq, epoch, type, data) "
                       "VALUES (?, ?, ?, ?, ?)",
                       "iiitt", job, (int64_t)seq, (int64_t)epoch, type, json);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_events_each(srv_store *s, int64_t job,
                          int (*cb)(uint64_t, uint32_t, const char *, const char *, void *),
                          void *user) {
  pthread_mutex_lock(&s->mu);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db,
                              "SELECT seq, epoch, type, data FROM events WHERE job=? ORDER BY seq",
                              -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, job);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
      if (cb((uint64_t)sqlite3_column_int64(st, 0), (uint32_t)sqlite3_column_int64(st, 1),
             col_text(st, 2), col_text(st, 3), user)) {
        rc = SQLITE_DONE;
        break;
      }
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&s->mu);
  return map_rc(rc);
}

static int events_locked(srv_store *s, int64_t job, const srv_event_row *ev, size_t n) {
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++)
    rc = exec_locked(s,
                     "INSERT OR REPLACE INTO events (job, seq, epoch, type, data) "
                     "VALUES (?, ?, ?, ?, ?)",
                     "iiitt", job, (int64_t)ev[i].seq, (int64_t)ev[i].epoch, ev[i].type,
                     ev[i].json);
  return rc;
}

/* BEGIN IMMEDIATE ... COMMIT around body results; ROLLBACK on any error. */
static int commit_or_rollback(srv_store *s, int rc) {
  if (!rc) rc = exec_locked(s, "COMMIT", "");
  if (rc) exec_locked(s, "ROLLBACK", "");
  return rc;
}

int srv_store_epoch_put(srv_store *s, int64_t job, uint32_t epoch, const char *metrics_json,
                        const srv_event_row *ev) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "BEGIN IMMEDIATE", "");
  if (!rc) {
    rc = exec_locked(s, "INSERT OR REPLACE INTO metrics (job, epoch, data) VALUES (?, ?, ?)",
                     "iit", job, (int64_t)epoch, metrics_json);
    if (!rc && ev) rc = events_locked(s, job, ev, 1);
    rc = commit_or_rollback(s, rc);
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_job_finish(srv_store *s, const srv_job_row *row, const srv_event_row *ev,
                         size_t n) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "BEGIN IMMEDIATE", "");
  if (!rc) {
    rc = job_update_locked(s, row);
    if (!rc) rc = events_locked(s, row->id, ev, n);
    /* Test-only (inert unless MNISTD_FAIL_AT=finish): the record of a
     * failed or cancelled end fails as on a full disk. */
    if (!rc && srv_fail_point("finish")) rc = -ENOSPC;
    rc = commit_or_rollback(s, rc);
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_cancel_request(srv_store *s, int64_t job, int64_t now_ms) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "INSERT OR IGNORE INTO job_cancel (job, requested_ms) VALUES (?, ?)",
                       "ii", job, now_ms);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

/* One integer column of the row of a job (sql has one "?", the job):
 * *out keeps its value when there is no row. */
static int job_int(srv_store *s, const char *sql, int64_t job, int64_t *out) {
  pthread_mutex_lock(&s->mu);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, job);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&s->mu);
  return map_rc(rc);
}

int srv_store_cancel_requested(srv_store *s, int64_t job, int *yes) {
  int64_t v = 0;
  int rc = job_int(s, "SELECT 1 FROM job_cancel WHERE job=?", job, &v);
  *yes = v == 1;
  return rc;
}

int srv_store_seq_reserve(srv_store *s, int64_t job, uint64_t upto) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s,
                       "INSERT INTO job_seq (job, reserved) VALUES (?, ?) ON CONFLICT(job) DO "
                       "UPDATE SET reserved=MAX(reserved, excluded.reserved)",
                       "ii", job, (int64_t)upto);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_seq_reserved(srv_store *s, int64_t job, uint64_t *upto) {
  int64_t v = 0;
  int rc = job_int(s, "SELECT reserved FROM job_seq WHERE job=?", job, &v);
  *upto = (uint64_t)v;
  return rc;
}

int srv_store_job_rewind(srv_store *s, int64_t job, uint32_t epoch) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "DELETE FROM metrics WHERE job=? AND epoch>?", "ii", job,
                       (int64_t)epoch);
  /* Events carry the epoch they belong to: progress of epoch k+1 and the
   * epoch event of k+1 are redone; state events (epoch 0) stay. */
  if (!rc)
    rc = exec_locked(s, "DELETE FROM events WHERE job=? AND epoch>? AND type!='state'", "ii",
                     job, (int64_t)epoch);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_model_next_id(srv_store *s, int64_t *id) {
  pthread_mutex_lock(&s->mu);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(
      s->db,
      "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name='models'), 0),"
      " COALESCE((SELECT MAX(id) FROM models), 0)) + 1",
      -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&s->mu);
  return map_rc(rc);
}

int srv_store_model_insert(srv_store *s, const srv_model_row *m, const srv_job_row *job,
                           const srv_event_row *ev, size_t n_ev, int activate, int64_t *id) {
  if (!isfinite(m->test_accuracy) || !isfinite(m->test_loss)) return -EINVAL;
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "BEGIN IMMEDIATE", "");
  if (rc) goto out;
  rc = exec_locked(s,
                   "INSERT INTO models (id, arch, dataset, parameters, test_accuracy, test_loss,"
                   " job_id, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   "zttiddzi", m->id, m->arch, m->dataset, (int64_t)m->parameters,
                   m->test_accuracy, m->test_loss, m->job_id, m->created_ms);
  if (!rc) {
    *id = sqlite3_last_insert_rowid(s->db);
    if (job) {
      srv_job_row j = *job;
      j.model_id = *id;
      rc = job_update_locked(s, &j);
      if (!rc) rc = events_locked(s, job->id, ev, n_ev);
    }
  }
  /* Test-only failure injection (inert unless MNISTD_FAIL_AT=activate):
   * recording the activation fails as on a full disk. */
  if (!rc && activate && srv_fail_point("activate")) rc = -ENOSPC;
  if (!rc && activate) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)*id);
    rc = exec_locked(s, "INSERT OR REPLACE INTO settings (key, value) VALUES ('active_model', ?)",
                     "t", buf);
  }
  rc = commit_or_rollback(s, rc);
out:
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_model_recover(srv_store *s, const srv_model_row *m) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "BEGIN IMMEDIATE", "");
  if (rc) goto out;
  /* 'd' binds NaN as NULL: "unknown", never a number. */
  rc = exec_locked(s,
                   "INSERT INTO models (id, arch, dataset, parameters, test_accuracy, test_loss,"
                   " job_id, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   "ittiddzi", m->id, m->arch, m->dataset, (int64_t)m->parameters,
                   m->test_accuracy, m->test_loss, m->job_id, m->created_ms);
  if (!rc && m->job_id > 0) {
    /* AUTOINCREMENT keeps its high-water mark here. */
    rc = exec_locked(s, "UPDATE sqlite_sequence SET seq=MAX(seq, ?) WHERE name='jobs'", "i",
                     m->job_id);
    if (!rc && sqlite3_changes(s->db) == 0)
      rc = exec_locked(s, "INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?)", "i",
                       m->job_id);
  }
  rc = commit_or_rollback(s, rc);
out:
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_model_delete(srv_store *s, int64_t id) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "DELETE FROM models WHERE id=?", "i", id);
  if (!rc && sqlite3_changes(s->db) == 0) rc = -ENOENT;
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_models_each(srv_store *s, int (*cb)(const srv_model_row *, void *), void *user) {
  pthread_mutex_lock(&s->mu);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db,
                              "SELECT id, arch, dataset, parameters, test_accuracy, test_loss,"
                              " job_id, created_ms FROM models ORDER BY id",
                              -1, &st, NULL);
  if (rc == SQLITE_OK) {
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      srv_model_row m = {sqlite3_column_int64(st, 0),        col_text(st, 1),
                         col_text(st, 2),                    (uint64_t)sqlite3_column_int64(st, 3),
                         col_real(st, 4),                    col_real(st, 5),
                         sqlite3_column_int64(st, 6),        sqlite3_column_int64(st, 7)};
      if (cb(&m, user)) {
        rc = SQLITE_DONE;
        break;
      }
    }
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&s->mu);
  return map_rc(rc);
}

int srv_store_setting_set(srv_store *s, const char *key, const char *value) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", "tt",
                       key, value);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_setting_get(srv_store *s, const char *key, char *buf, size_t len) {
  pthread_mutex_lock(&s->mu);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, "SELECT value FROM settings WHERE key=?", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      snprintf(buf, len, "%s", col_text(st, 0));
      rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
      rc = SQLITE_NOTFOUND;
    }
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&s->mu);
  return map_rc(rc);
}

/* ---------------------------------------------------------------- data sets */

int srv_store_dataset_put(srv_store *s, const char *name, const char *info_json) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "INSERT OR REPLACE INTO datasets (name, info) VALUES (?, ?)", "tt",
                       name, info_json);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_dataset_delete(srv_store *s, const char *name) {
  pthread_mutex_lock(&s->mu);
  int rc = exec_locked(s, "DELETE FROM datasets WHERE name=?", "t", name);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int srv_store_datasets_each(srv_store *s, int (*cb)(const char *name, const char *info, void *u),
                            void *u) {
  pthread_mutex_lock(&s->mu);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, "SELECT name, info FROM datasets ORDER BY name", -1, &st,
                              NULL);
  if (rc == SQLITE_OK) {
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
      if (cb(col_text(st, 0), col_text(st, 1), u)) break;
    if (rc == SQLITE_ROW) rc = SQLITE_OK;
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&s->mu);
  return map_rc(rc);
}
