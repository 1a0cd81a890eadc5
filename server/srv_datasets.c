/* Uploaded data sets: see srv_datasets.h. */
#include "srv_datasets.h"
#include "srv_util.h"

#include <archive.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <nettle/sha2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAGIC "MNISTDS1"
#define HDR 24u
#define IMG 784u

typedef struct entry {
  char name[72];
  char **classes;   /* one block */
  uint32_t n_classes, train, test;
  uint64_t bytes;
  char sha256[65];
  char source_format[16];
  int64_t created_ms;
  int pending;      /* being created: the name is taken, not listed */
  int deleting;     /* being deleted: the name is taken, not listed, not found */
  struct entry *next;
} entry;

struct srv_datasets {
  /* Taken after the jobs' lock and before the store's (the lock order is
   * written out at the top of srv_jobs.c); held only for the list, never
   * across the store or the disk. */
  pthread_mutex_t mu;
  srv_store *st;
  char dir[PATH_MAX];
  srv_ds_config cfg;
  entry *list;
  void (*log)(const char *);
  int readonly;       /* srv_datasets_open_readonly: reads only */
};

struct srv_ds_upload {
  srv_datasets *d;
  char path[PATH_MAX + 32];
  int fd;
  uint64_t size;
  int too_big;
};

void srv_ds_config_default(srv_ds_config *c) {
  srv_ds_limits_default(&c->lim);
  c->max_body = (uint64_t)512 << 20;
  c->quota = (uint64_t)4 << 30;
}

static const char *const DIGITS[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
static const char *const FASHION[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

const char *const *srv_dataset_builtin_classes(const char *name) {
  return !strcmp(name, "fashion-mnist") ? FASHION : DIGITS;
}

static void logf_(srv_datasets *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(srv_datasets *d, const char *fmt, ...) {
  if (!d->log) return;
  char buf[700];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  d->log(buf);
}

static void entry_free(entry *e) {
  if (!e) return;
  free(e->classes);
  free(e);
}

static cJSON *entry_json(const entry *e) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "name", e->name);
  cJSON *c = cJSON_AddArrayToObject(o, "classes");
  for (uint32_t i = 0; i < e->n_classes; i++) cJSON_AddItemToArray(c, cJSON_CreateString(e->classes[i]));
  cJSON_AddNumberToObject(o, "train", e->train);
  cJSON_AddNumberToObject(o, "test", e->test);
  cJSON_AddNumberToObject(o, "bytes", (double)e->bytes);
  cJSON_AddStringToObject(o, "sha256", e->sha256);
  cJSON_AddStringToObject(o, "source_format", e->source_format);
  char t[40];
  time_t s = (time_t)(e->created_ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tm);
  cJSON_AddStringToObject(o, "created_at", t);
  cJSON_AddNumberToObject(o, "created_ms", (double)e->created_ms);
  cJSON_AddBoolToObject(o, "builtin", 0);
  return o;
}

static entry *entry_from_json(const char *name, const char *info) {
  cJSON *o = cJSON_Parse(info);
  entry *e = calloc(1, sizeof *e);
  const cJSON *c = cJSON_GetObjectItem(o, "classes");
  if (!o || !e || !cJSON_IsArray(c)) goto bad;
  snprintf(e->name, sizeof e->name, "%s", name);
  uint32_t n = (uint32_t)cJSON_GetArraySize(c);
  char *names[NN_MAX_CLASSES];
  if (n < 2 || n > NN_MAX_CLASSES) goto bad;
  for (uint32_t i = 0; i < n; i++) {
    const cJSON *s = cJSON_GetArrayItem(c, (int)i);
    if (!cJSON_IsString(s)) goto bad;
    names[i] = s->valuestring;
  }
  if (!(e->classes = srv_names_pack((const char *const *)names, n))) goto bad;
  e->n_classes = n;
  e->train = (uint32_t)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "train"));
  e->test = (uint32_t)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "test"));
  e->bytes = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "bytes"));
  e->created_ms = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "created_ms"));
  const char *h = cJSON_GetStringValue(cJSON_GetObjectItem(o, "sha256"));
  const char *f = cJSON_GetStringValue(cJSON_GetObjectItem(o, "source_format"));
  if (!h || strlen(h) != 64) goto bad;
  snprintf(e->sha256, sizeof e->sha256, "%s", h);
  snprintf(e->source_format, sizeof e->source_format, "%s", f ? f : "unknown");
  cJSON_Delete(o);
  return e;
bad:
  cJSON_Delete(o);
  entry_free(e);
  return NULL;
}

static void file_path(const srv_datasets *d, const char *name, char *buf, size_t len) {
  snprintf(buf, len, "%s/%.64s.mds", d->dir, name);
}

/* Where a set's file goes while it is deleted (see srv_datasets_delete_finish):
 * a name the start-up scan never registers, only removes. */
#define TOMB ".deleted-"
static void tomb_path(const srv_datasets *d, const char *name, char *buf, size_t len) {
  snprintf(buf, len, "%s/" TOMB "%.64s", d->dir, name);
}

static void hex(const uint8_t *h, char out[65]) {
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads a whole .mds file and checks its layout and checksum; *buf is
 * malloc'd. */
static int read_file(const char *path, uint8_t **buf, size_t *len, char sha[65], char *msg,
                     size_t msglen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return snprintf(msg, msglen, "%s: %s", path, strerror(errno)), -ENOENT;
  struct stat sb;
  uint8_t *b = NULL;
  int rc = -EIO;
  if (fstat(fd, &sb) || sb.st_size < HDR + 32) {
    snprintf(msg, msglen, "%s: too short", path);
    goto out;
  }
  size_t n = (size_t)sb.st_size, got = 0;
  if (!(b = malloc(n))) {
    rc = -ENOMEM;
    goto out;
  }
  while (got < n) {
    ssize_t r = read(fd, b + got, n - got);
    if (r <= 0) {
      snprintf(msg, msglen, "%s: read error", path);
      goto out;
    }
    got += (size_t)r;
  }
  uint32_t k = le32(b + 8), tr = le32(b + 12), te = le32(b + 16), nl = le32(b + 20);
  if (memcmp(b, MAGIC, 8) || k < 2 || k > NN_MAX_CLASSES ||
      (uint64_t)HDR + nl + ((uint64_t)tr + te) * (IMG + 1) + 32 != n) {
    snprintf(msg, msglen, "%s: not a data set file (bad header or size)", path);
    goto out;
  }
  struct sha256_ctx c;
  uint8_t h[32];
  sha256_init(&c);
  sha256_update(&c, n - 32, b);
  sha256_digest(&c, 32, h);
  if (memcmp(h, b + n - 32, 32)) {
    snprintf(msg, msglen, "%s: checksum mismatch (the file is damaged)", path);
    goto out;
  }
  hex(h, sha);
  *buf = b;
  *len = n;
  b = NULL;
  rc = 0;
out:
  free(b);
  close(fd);
  return rc;
}

/* A file without its row: registered again from its own contents. */
static int recover_file(srv_datasets *d, const char *name) {
  char path[PATH_MAX + 160], msg[600], sha[65];
  file_path(d, name, path, sizeof path);
  uint8_t *b;
  size_t n;
  int rc = read_file(path, &b, &n, sha, msg, sizeof msg);
  if (rc) {
    logf_(d, "data set file %s is damaged, moved nowhere and not listed: %s", path, msg);
    return rc;
  }
  entry *e = calloc(1, sizeof *e);
  char *names[NN_MAX_CLASSES], *blob = strndup((char *)b + HDR, le32(b + 20));
  uint32_t k = le32(b + 8);
  rc = -ENOMEM;
  if (e && blob) {
    char *p = blob;
    uint32_t i = 0;
    for (char *s; i < k && (s = strsep(&p, "\n"));) names[i++] = s;
    if (i == k && (e->classes = srv_names_pack((const char *const *)names, k))) rc = 0;
  }
  free(blob);
  if (!rc) {
    snprintf(e->name, sizeof e->name, "%.64s", name);
    e->n_classes = k;
    e->train = le32(b + 12);
    e->test = le32(b + 16);
    e->bytes = n;
    memcpy(e->sha256, sha, 65);
    snprintf(e->source_format, sizeof e->source_format, "recovered");
    struct stat sb;
    e->created_ms = stat(path, &sb) ? 0 : (int64_t)sb.st_mtime * 1000;
    cJSON *j = entry_json(e);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    rc = s ? srv_store_dataset_put(d->st, name, s) : -ENOMEM;
    free(s);
  }
  free(b);
  if (rc) {
    entry_free(e);
    return rc;
  }
  e->next = d->list;
  d->list = e;
  logf_(d, "data set %s registered again from its file (no record of it)", name);
  return 0;
}

static int load_row(const char *name, const char *info, void *u) {
  srv_datasets *d = u;
  entry *e = entry_from_json(name, info);
  char path[PATH_MAX + 160];
  file_path(d, name, path, sizeof path);
  struct stat sb;
  if (!e) {
    logf_(d, "data set %s: unreadable record, not listed", name);
    return 0;
  }
  if (stat(path, &sb) || (uint64_t)sb.st_size != e->bytes) {
    logf_(d, "data set %s: file %s is missing or has the wrong size; not listed", name, path);
    entry_free(e);
    return 0;
  }
  e->next = d->list;
  d->list = e;
  return 0;
}

/* Listed and usable: neither being created nor being deleted. */
static int live(const entry *e) { return e && !e->pending && !e->deleting; }

static entry *find(srv_datasets *d, const char *name) {
  for (entry *e = d->list; e; e = e->next)
    if (!strcmp(e->name, name)) return e;
  return NULL;
}

int srv_datasets_open_readonly(srv_datasets **out, srv_store *st, const char *state_dir) {
  srv_datasets *d = calloc(1, sizeof *d);
  if (!d) return -ENOMEM;
  pthread_mutex_init(&d->mu, NULL);
  d->st = st;
  srv_ds_config_default(&d->cfg);
  d->readonly = 1;
  snprintf(d->dir, sizeof d->dir, "%s/datasets", state_dir);
  /* Only the records whose file is there: no temporary files removed, no
   * file registered again (the daemon does that at its start). */
  int rc = srv_store_datasets_each(st, load_row, d);
  if (rc) {
    srv_datasets_close(d);
    return rc;
  }
  *out = d;
  return 0;
}

/* Finishes the deletes a crash interrupted (srv_datasets_delete_finish):
 * a tombstone means its set is gone. Without NAME.mds beside it, the
 * record goes first (then the tombstone: a crash in between leaves the
 * tombstone to the next start); with one, the tombstone is from an earlier
 * delete whose unlink failed and the file is a later upload of the name,
 * whose record stays. A record that cannot be removed keeps its tombstone
 * (the set is not listed: its file is missing) for the next start. */
static int finish_deletes(srv_datasets *d) {
  DIR *dh = opendir(d->dir);
  if (!dh) return -errno;
  int removed = 0;
  for (struct dirent *de; (de = readdir(dh));) {
    const char *n = de->d_name;
    if (strncmp(n, TOMB, sizeof TOMB - 1)) continue;
    const char *name = n + sizeof TOMB - 1;
    char tomb[PATH_MAX + 300], path[PATH_MAX + 160];
    snprintf(tomb, sizeof tomb, "%s/%s", d->dir, n);
    struct stat sb;
    int rc = 0;
    if (srv_dataset_name_ok(name)) {
      file_path(d, name, path, sizeof path);
      if (stat(path, &sb) < 0 && (rc = srv_store_dataset_delete(d->st, name))) {
        logf_(d, "data set %s: could not finish its interrupted delete (%s); it stays unlisted "
              "and the next start tries again", name, srv_store_errmsg(d->st));
        continue;
      }
    }
    if (unlink(tomb) == 0) {
      removed = 1;
      logf_(d, "data set %s: finished its interrupted delete (removed %s)", name, tomb);
    }
  }
  closedir(dh);
  return removed ? srv_fsync_dir(d->dir) : 0;
}

int srv_datasets_open(srv_datasets **out, srv_store *st, const char *state_dir,
                      const srv_ds_config *cfg, void (*log)(const char *msg)) {
  srv_datasets *d = calloc(1, sizeof *d);
  if (!d) return -ENOMEM;
  pthread_mutex_init(&d->mu, NULL);
  d->st = st;
  d->cfg = *cfg;
  d->log = log;
  snprintf(d->dir, sizeof d->dir, "%s/datasets", state_dir);
  int rc = srv_mkdir_durable(d->dir, 0755);
  if (!rc && (rc = finish_deletes(d)))
    logf_(d, "data sets: finishing interrupted deletes in %s failed: %s", d->dir, strerror(-rc));
  if (!rc) rc = srv_store_datasets_each(st, load_row, d);
  DIR *dh = rc ? NULL : opendir(d->dir);
  if (!rc && !dh) rc = -errno;
  for (struct dirent *de; dh && (de = readdir(dh));) {
    const char *n = de->d_name;
    char path[PATH_MAX + 300];
    snprintf(path, sizeof path, "%s/%s", d->dir, n);
    if (!strncmp(n, ".upload-", 8) || !strncmp(n, ".tmp-", 5)) {
      if (!unlink(path)) logf_(d, "removed the unfinished upload %s", path);
      continue;
    }
    size_t l = strlen(n);
    if (l < 5 || strcmp(n + l - 4, ".mds")) continue;
    char name[80];
    if (l - 4 >= sizeof name) continue;
    memcpy(name, n, l - 4);
    name[l - 4] = 0;
    if (srv_dataset_name_ok(name) && !find(d, name)) recover_file(d, name);
  }
  if (dh) closedir(dh);
  if (rc) {
    srv_datasets_close(d);
    return rc;
  }
  *out = d;
  return 0;
}

void srv_datasets_close(srv_datasets *d) {
  if (!d) return;
  for (entry *e = d->list, *n; e; e = n) {
    n = e->next;
    entry_free(e);
  }
  pthread_mutex_destroy(&d->mu);
  free(d);
}

const srv_ds_config *srv_datasets_config(srv_datasets *d) {
  static srv_ds_config none; /* a replica's: no uploads */
  return d ? &d->cfg : &none;
}

cJSON *srv_datasets_json(srv_datasets *d, const char *name) {
  if (!d) return NULL;
  pthread_mutex_lock(&d->mu);
  entry *e = find(d, name);
  cJSON *o = live(e) ? entry_json(e) : NULL;
  pthread_mutex_unlock(&d->mu);
  return o;
}

void srv_datasets_list(srv_datasets *d, cJSON *arr) {
  if (!d) return;
  pthread_mutex_lock(&d->mu);
  /* name order: the list is built newest first */
  const entry *v[4096];
  size_t n = 0;
  for (entry *e = d->list; e && n < 4096; e = e->next)
    if (live(e)) v[n++] = e;
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && strcmp(v[j - 1]->name, v[j]->name) > 0; j--) {
      const entry *t = v[j];
      v[j] = v[j - 1];
      v[j - 1] = t;
    }
  for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(arr, entry_json(v[i]));
  pthread_mutex_unlock(&d->mu);
}

int srv_datasets_count(srv_datasets *d, const char *name, uint32_t *train, uint32_t *test,
                       uint32_t *classes) {
  if (!d) return -ENOENT;
  pthread_mutex_lock(&d->mu);
  entry *e = find(d, name);
  /* Decided under the lock: a concurrent delete may free `e` after it. */
  int found = live(e);
  if (found) {
    if (train) *train = e->train;
    if (test) *test = e->test;
    if (classes) *classes = e->n_classes;
  }
  pthread_mutex_unlock(&d->mu);
  return found ? 0 : -ENOENT;
}

int srv_datasets_classes(srv_datasets *d, const char *name, char ***names, uint32_t *n) {
  if (!d) return -ENOENT;
  pthread_mutex_lock(&d->mu);
  entry *e = find(d, name);
  int rc = -ENOENT;
  if (live(e)) {
    rc = (*names = srv_names_pack((const char *const *)e->classes, e->n_classes)) ? 0 : -ENOMEM;
    *n = e->n_classes;
  }
  pthread_mutex_unlock(&d->mu);
  return rc;
}

int srv_datasets_sha(srv_datasets *d, const char *name, char sha[65]) {
  if (!d) return -ENOENT;
  pthread_mutex_lock(&d->mu);
  entry *e = find(d, name);
  int found = live(e);
  if (found) memcpy(sha, e->sha256, 65);
  pthread_mutex_unlock(&d->mu);
  return found ? 0 : -ENOENT;
}

int srv_datasets_load(srv_datasets *d, const char *name, nn_split split, nn_dataset *ds,
                      char sha[65], char *msg, size_t msglen) {
  char want[65], path[PATH_MAX + 160];
  pthread_mutex_lock(&d->mu);
  entry *e = find(d, name);
  /* Decided under the lock: a concurrent delete may free `e` after it. */
  int found = live(e);
  if (found) memcpy(want, e->sha256, 65);
  pthread_mutex_unlock(&d->mu);
  if (!found) {
    snprintf(msg, msglen, "data set %s not found", name);
    return -ENOENT;
  }
  file_path(d, name, path, sizeof path);
  uint8_t *b;
  size_t n;
  int rc = read_file(path, &b, &n, sha, msg, msglen);
  if (rc) return rc == -ENOENT ? -EIO : rc;
  if (strcmp(sha, want)) {
    free(b);
    snprintf(msg, msglen, "%s: checksum %s differs from the recorded one", path, sha);
    return -EIO;
  }
  uint32_t tr = le32(b + 12), te = le32(b + 16), nl = le32(b + 20);
  uint32_t cnt = split == NN_SPLIT_TRAIN ? tr : te;
  const uint8_t *lab = b + HDR + nl + (split == NN_SPLIT_TRAIN ? 0 : tr);
  const uint8_t *img = b + HDR + nl + tr + te + (split == NN_SPLIT_TRAIN ? 0 : (size_t)tr * IMG);
  memset(ds, 0, sizeof *ds);
  ds->images = malloc((size_t)cnt * IMG + 1);
  ds->labels = malloc((size_t)cnt + 1);
  if (!ds->images || !ds->labels) {
    free(b);
    nn_dataset_free(ds);
    return -ENOMEM;
  }
  memcpy(ds->images, img, (size_t)cnt * IMG);
  memcpy(ds->labels, lab, cnt);
  ds->n = cnt;
  ds->rows = ds->cols = 28;
  free(b);
  return 0;
}

int srv_datasets_delete_begin(srv_datasets *d, const char *name) {
  if (!d) return -ENOENT;
  if (d->readonly) return -EROFS;
  pthread_mutex_lock(&d->mu);
  entry *e = find(d, name);
  int rc = live(e) ? 0 : -ENOENT;
  if (!rc) e->deleting = 1;
  pthread_mutex_unlock(&d->mu);
  return rc;
}

/* Takes e off the list and frees it (a pending upload that failed, or a
 * set whose delete is done). */
static void drop(srv_datasets *d, entry *e) {
  pthread_mutex_lock(&d->mu);
  for (entry **pp = &d->list; *pp; pp = &(*pp)->next)
    if (*pp == e) {
      *pp = e->next;
      break;
    }
  pthread_mutex_unlock(&d->mu);
  entry_free(e);
}

int srv_datasets_delete_finish(srv_datasets *d, const char *name) {
  pthread_mutex_lock(&d->mu);
  entry *e = find(d, name);
  int rc = e && e->deleting ? 0 : -ENOENT;
  pthread_mutex_unlock(&d->mu);
  if (rc) return rc;
  /* No lock held from here: the entry stays (hidden, its name taken) until
   * the file is gone, and only this call removes it. */
  char path[PATH_MAX + 160], tomb[PATH_MAX + 160];
  file_path(d, name, path, sizeof path);
  tomb_path(d, name, tomb, sizeof tomb);
  srv_hold_point("dataset_delete_io");
  /* The file leaves its name durably before the record goes: a file under
   * its own name without a record is registered again at the next start
   * (an upload's crash between its rename and its insert), so removing the
   * record first would let a crash before the unlink bring the set back.
   * From the rename on, a crash ends in "gone": the start removes the
   * record and the tombstone (finish_deletes). */
  if (rename(path, tomb)) {
    rc = -errno;
    logf_(d, "data set %s: cannot delete, renaming %s failed: %s", name, path, strerror(-rc));
    goto keep;
  }
  if ((rc = srv_fsync_dir(d->dir))) {
    /* The new name may not survive a crash: the delete cannot be made to. */
    logf_(d, "data set %s: cannot delete, making the rename of %s durable failed: %s", name, path,
          strerror(-rc));
    goto put_back;
  }
  srv_hold_point("dataset_delete_renamed");
  /* MNISTD_FAIL_AT=dataset_delete: the commit fails as on a full disk. */
  if ((rc = srv_fail_point("dataset_delete") ? -ENOSPC : srv_store_dataset_delete(d->st, name))) {
    logf_(d, "data set %s: cannot delete, removing its record failed: %s", name,
          rc == -ENOSPC ? strerror(ENOSPC) : srv_store_errmsg(d->st));
    goto put_back;
  }
  srv_hold_point("dataset_delete_committed");
  /* The delete stands; a tombstone left here goes at the next start. */
  int frc = unlink(tomb) ? -errno : srv_fsync_dir(d->dir);
  if (frc && frc != -ENOENT)
    logf_(d, "data set %s deleted; removing %s failed (%s): the next start removes it", name,
          tomb, strerror(-frc));
  drop(d, e);
  return 0;
put_back:
  if (rename(tomb, path)) {
    /* The record stays but the file is a tombstone: the next start
     * completes the delete, so the set is gone now too (its name free: an
     * upload of it replaces the record, and the start then only removes
     * the tombstone). */
    logf_(d, "data set %s: putting %s back failed (%s); the set is deleted and its record goes "
          "at the next start", name, path, strerror(errno));
    drop(d, e);
    return 0;
  }
  int src = srv_fsync_dir(d->dir);
  if (src)
    logf_(d, "data set %s: its file is back, but not durably (%s): after a crash the set may be "
          "gone", name, strerror(-src));
keep:
  pthread_mutex_lock(&d->mu);
  e->deleting = 0; /* still recorded, its file in place: still there */
  pthread_mutex_unlock(&d->mu);
  return rc;
}

int srv_datasets_delete(srv_datasets *d, const char *name) {
  int rc = srv_datasets_delete_begin(d, name);
  return rc ? rc : srv_datasets_delete_finish(d, name);
}

/* ---------------------------------------------------------------- uploads */

int srv_ds_upload_open(srv_datasets *d, srv_ds_upload **out) {
  if (!d || d->readonly) return -EROFS;
  srv_ds_upload *u = calloc(1, sizeof *u);
  if (!u) return -ENOMEM;
  u->d = d;
  snprintf(u->path, sizeof u->path, "%s/.upload-XXXXXX", d->dir);
  if ((u->fd = mkostemp(u->path, O_CLOEXEC)) < 0) {
    int rc = -errno;
    free(u);
    return rc;
  }
  *out = u;
  return 0;
}

int srv_ds_upload_write(srv_ds_upload *u, const void *buf, size_t n) {
  if (u->too_big || u->size + n > u->d->cfg.max_body) {
    if (!u->too_big && ftruncate(u->fd, 0)) { /* the bytes are never needed */
    }
    u->too_big = 1;
    u->size += n;
    return -E2BIG;
  }
  const char *p = buf;
  for (size_t done = 0; done < n;) {
    ssize_t w = write(u->fd, p + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno == ENOSPC ? -ENOSPC : -EIO;
    }
    done += (size_t)w;
  }
  u->size += n;
  return 0;
}

uint64_t srv_ds_upload_size(const srv_ds_upload *u) { return u ? u->size : 0; }

void srv_ds_upload_free(srv_ds_upload *u) {
  if (!u) return;
  if (u->fd >= 0) close(u->fd);
  unlink(u->path);
  free(u);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_upload(srv_datasets *d, srv_ds_upload *u, const srv_ds_create *c,
                        srv_ds_build *b, char *msg, size_t msglen) {
  const char *ct = c->content_type;
  int rc;
  if (!strcmp(ct, "text/csv")) {
    FILE *f = fopen(u->path, "rb");
    if (!f) return -EIO;
    rc = srv_ds_parse_csv(f, &d->cfg.lim, b, msg, msglen);
    fclose(f);
    return rc;
  }
  if (strcmp(ct, "application/zip") && strcmp(ct, "application/x-tar") &&
      strcmp(ct, "application/gzip") && strcmp(ct, "application/x-gzip") &&
      strcmp(ct, "application/x-zip-compressed") && strcmp(ct, "application/x-gtar")) {
    snprintf(msg, msglen, "Content-Type %.60s is not a data set format; send application/zip, "
             "application/x-tar, application/gzip (a .tar.gz) or text/csv", ct[0] ? ct : "(none)");
    return -ENOTSUP;
  }
  struct archive *a = archive_read_new();
  if (!a) return -ENOMEM;
  archive_read_support_filter_gzip(a);
  archive_read_support_format_zip(a);
  archive_read_support_format_tar(a);
  if (archive_read_open_filename(a, u->path, 1 << 16) != ARCHIVE_OK) {
    snprintf(msg, msglen, "not a zip, tar or tar.gz archive: %.200s",
             archive_error_string(a) ? archive_error_string(a) : "unreadable");
    archive_read_free(a);
    return -EINVAL;
  }
  rc = srv_ds_parse_archive(a, &d->cfg.lim, c->preprocess, b, msg, msglen);
  archive_read_free(a);
  return rc;
}

static int write_all(int fd, const void *p, size_t n, struct sha256_ctx *h) {
  if (h) sha256_update(h, n, p);
  for (size_t done = 0; done < n;) {
    ssize_t w = write(fd, (const char *)p + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno == ENOSPC ? -ENOSPC : -EIO;
    }
    done += (size_t)w;
  }
  return 0;
}

/* Writes b as NAME.mds (temp, fsync, rename, fsync dir); fills e. */
static int write_set(srv_datasets *d, const srv_ds_build *b, entry *e) {
  char tmp[PATH_MAX + 160], path[PATH_MAX + 160];
  snprintf(tmp, sizeof tmp, "%s/.tmp-%.64s-XXXXXX", d->dir, e->name);
  file_path(d, e->name, path, sizeof path);
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) return -errno;
  size_t nl = 0;
  for (uint32_t i = 0; i < b->n_classes; i++) nl += strlen(b->classes[i]) + (i > 0);
  char *names = malloc(nl + 1);
  int rc = -ENOMEM;
  if (!names) goto fail;
  names[0] = 0;
  for (uint32_t i = 0, o = 0; i < b->n_classes; i++)
    o += (uint32_t)sprintf(names + o, "%s%s", i ? "\n" : "", b->classes[i]);
  uint8_t h[HDR];
  memcpy(h, MAGIC, 8);
  uint32_t v[4] = {b->n_classes, (uint32_t)b->train.n, (uint32_t)b->test.n, (uint32_t)nl};
  for (int i = 0; i < 4; i++)
    for (int k = 0; k < 4; k++) h[8 + 4 * i + k] = (uint8_t)(v[i] >> (8 * k));
  struct sha256_ctx c;
  sha256_init(&c);
  uint8_t dg[32];
  if ((rc = write_all(fd, h, HDR, &c)) || (rc = write_all(fd, names, nl, &c)) ||
      (rc = write_all(fd, b->train.labels, b->train.n, &c)) ||
      (rc = write_all(fd, b->test.labels, b->test.n, &c)) ||
      (rc = write_all(fd, b->train.images, b->train.n * IMG, &c)) ||
      (rc = write_all(fd, b->test.images, b->test.n * IMG, &c)))
    goto fail;
  sha256_digest(&c, 32, dg);
  if ((rc = write_all(fd, dg, 32, NULL))) goto fail;
  if (fsync(fd)) {
    rc = errno == ENOSPC ? -ENOSPC : -EIO;
    goto fail;
  }
  srv_crash_point("dataset_before_rename");
  if (rename(tmp, path)) {
    rc = -errno;
    goto fail;
  }
  close(fd);
  fd = -1;
  if ((rc = srv_fsync_dir(d->dir))) {
    /* The new name may not survive a crash: not a data set yet. */
    unlink(path);
    free(names);
    return rc;
  }
  srv_crash_point("dataset_before_record");
  free(names);
  uint64_t bytes = HDR + nl + (b->train.n + b->test.n) * (IMG + 1) + 32;
  /* Other uploads sum the sizes of pending sets too (used_bytes). */
  pthread_mutex_lock(&d->mu);
  e->bytes = bytes;
  pthread_mutex_unlock(&d->mu);
  hex(dg, e->sha256);
  return 0;
fail:
  free(names);
  if (fd >= 0) close(fd);
  unlink(tmp);
  return rc;
}

static uint64_t used_bytes(srv_datasets *d) {
  uint64_t s = 0;
  for (entry *e = d->list; e; e = e->next) s += e->bytes;
  return s;
}

/* Takes the name (a pending entry) so that two uploads cannot both win.
 * -EBUSY: a delete of that name is under way (not yet answered). */
static int reserve(srv_datasets *d, const char *name, entry **out) {
  pthread_mutex_lock(&d->mu);
  int rc = 0;
  entry *e = NULL, *old = find(d, name);
  if (old) rc = old->deleting ? -EBUSY : -EEXIST;
  else if (!(e = calloc(1, sizeof *e))) rc = -ENOMEM;
  else {
    snprintf(e->name, sizeof e->name, "%s", name);
    e->pending = 1;
    e->next = d->list;
    d->list = e;
  }
  pthread_mutex_unlock(&d->mu);
  *out = e;
  return rc;
}

int srv_datasets_create(srv_datasets *d, srv_ds_upload *u, const srv_ds_create *c, cJSON **out,
                        char *msg, size_t msglen) {
  srv_ds_build b = {0};
  entry *e = NULL;
  int rc;
  if (srv_dataset_is_builtin(c->name) || (rc = reserve(d, c->name, &e)) == -EEXIST) {
    snprintf(msg, msglen, "a data set named %s exists already (DELETE /v1/datasets/%s first, "
             "or pick another name)", c->name, c->name);
    return -EEXIST;
  }
  if (rc == -EBUSY) {
    /* Not "DELETE first": that DELETE would answer 404 while this one runs. */
    snprintf(msg, msglen, "the data set %s is being deleted; upload it again once its DELETE "
             "has answered", c->name);
    return -EBUSY;
  }
  if (rc) return rc;
  if (u->too_big) {
    rc = -E2BIG;
    snprintf(msg, msglen, "the upload is larger than %llu bytes, this server's limit "
             "(--max-dataset-upload)", (unsigned long long)d->cfg.max_body);
    goto fail;
  }
  if ((rc = parse_upload(d, u, c, &b, msg, msglen))) goto fail;
  srv_hold_point("dataset_converting");
  if (!b.has_test && (rc = srv_ds_hold_out(&b, c->test_fraction, 0x6d6e69737464ull))) goto fail;
  if ((rc = srv_ds_check(&b, &d->cfg.lim, msg, msglen))) goto fail;
  uint64_t need = HDR + (b.train.n + b.test.n) * (IMG + 1) + 32 + 64 * b.n_classes;
  pthread_mutex_lock(&d->mu);
  uint64_t used = used_bytes(d);
  e->bytes = need; /* counted while being written */
  pthread_mutex_unlock(&d->mu);
  if (used + need > d->cfg.quota) {
    rc = -EDQUOT;
    snprintf(msg, msglen, "the data set needs %llu bytes; uploaded data sets already use %llu of "
             "the %llu allowed (--max-datasets-bytes): delete one first",
             (unsigned long long)need, (unsigned long long)used, (unsigned long long)d->cfg.quota);
    goto fail;
  }
  if (!(e->classes = srv_names_pack((const char *const *)b.classes, b.n_classes))) {
    rc = -ENOMEM;
    goto fail;
  }
  e->n_classes = b.n_classes;
  e->train = (uint32_t)b.train.n;
  e->test = (uint32_t)b.test.n;
  snprintf(e->source_format, sizeof e->source_format, "%s", b.source_format);
  e->created_ms = now_ms();
  if ((rc = write_set(d, &b, e))) {
    snprintf(msg, msglen, "could not write the data set: %s", strerror(-rc));
    goto fail;
  }
  cJSON *j = entry_json(e);
  char *s = cJSON_PrintUnformatted(j);
  rc = s ? srv_store_dataset_put(d->st, e->name, s) : -ENOMEM;
  free(s);
  if (rc) {
    cJSON_Delete(j);
    char path[PATH_MAX + 160];
    file_path(d, e->name, path, sizeof path);
    unlink(path);
    snprintf(msg, msglen, "could not record the data set: %s", srv_store_errmsg(d->st));
    goto fail;
  }
  pthread_mutex_lock(&d->mu);
  e->pending = 0;
  pthread_mutex_unlock(&d->mu);
  srv_ds_build_free(&b);
  *out = j;
  return 0;
fail:
  srv_ds_build_free(&b);
  drop(d, e);
  return rc;
}
