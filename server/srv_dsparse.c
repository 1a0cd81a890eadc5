/* Parsers for uploaded data sets: see srv_dsparse.h. Everything here
 * reads untrusted bytes: every length is checked before it is used and
 * every limit before the allocation it guards. */
#include "srv_dsparse.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "srv_image.h"

#define IMG 784u
#define CSV_MAX_LINE 16384

void srv_ds_limits_default(srv_ds_limits *l) {
  l->max_images = 1000000;
  l->max_classes = 256;
  l->max_archive_bytes = (uint64_t)2 << 30;
  l->max_entries = 2000000;
  l->max_image_bytes = 16u << 20;
}

static int fail(char *msg, size_t len, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *msg, size_t len, int rc, const char *fmt, ...) {
  if (msg && len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
  }
  return rc;
}

static void split_free(srv_ds_split *s) {
  free(s->images);
  free(s->labels);
  memset(s, 0, sizeof *s);
}

void srv_ds_build_free(srv_ds_build *b) {
  if (!b) return;
  for (uint32_t i = 0; i < b->n_classes; i++) free(b->classes[i]);
  free(b->classes);
  split_free(&b->train);
  split_free(&b->test);
  memset(b, 0, sizeof *b);
}

static int split_push(srv_ds_split *s, const uint8_t *img, uint8_t label) {
  if (s->n == s->cap) {
    uint64_t cap = s->cap ? s->cap * 2 : 1024;
    uint8_t *im = realloc(s->images, cap * IMG);
    if (!im) return -ENOMEM;
    s->images = im;
    uint8_t *lb = realloc(s->labels, cap);
    if (!lb) return -ENOMEM;
    s->labels = lb;
    s->cap = cap;
  }
  memcpy(s->images + s->n * IMG, img, IMG);
  s->labels[s->n++] = label;
  return 0;
}

/* Valid UTF-8 without control characters, 1..SRV_DS_MAX_CLASS_NAME bytes. */
static int name_ok(const char *s, size_t n) {
  if (n == 0 || n > SRV_DS_MAX_CLASS_NAME) return 0;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f) return 0;
    size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!k || i + k > n || (k == 2 && c < 0xc2)) return 0;
    for (size_t j = 1; j < k; j++)
      if (((unsigned char)s[i + j] & 0xc0) != 0x80) return 0;
    i += k;
  }
  return 1;
}

/* Finds or adds a class by name; *idx its index. -E2BIG past the limit,
 * -EEXIST for a name equal to another but for case (*idx = that one). */
static int class_of(srv_ds_build *b, const char *name, size_t n, uint32_t max, uint32_t *idx) {
  for (uint32_t i = 0; i < b->n_classes; i++) {
    if (strlen(b->classes[i]) != n) continue;
    if (!memcmp(b->classes[i], name, n)) {
      *idx = i;
      return 0;
    }
    if (!strncasecmp(b->classes[i], name, n)) {
      *idx = i;
      return -EEXIST;
    }
  }
  if (b->n_classes >= max) return -E2BIG;
  char **c = realloc(b->classes, (b->n_classes + 1) * sizeof *c);
  if (!c) return -ENOMEM;
  b->classes = c;
  if (!(c[b->n_classes] = strndup(name, n))) return -ENOMEM;
  *idx = b->n_classes++;
  return 0;
}

static int is_uint(const char *s, unsigned long *v) {
  if (!*s || strlen(s) > 9) return 0;
  for (const char *p = s; *p; p++)
    if (*p < '0' || *p > '9') return 0;
  *v = strtoul(s, NULL, 10);
  return 1;
}

/* Sorts the classes (numerically when all are numbers) and relabels. An
 * insertion sort of indices: at most 256 names, and no static state for a
 * qsort comparator (several uploads may convert at once). */
static int sort_classes(srv_ds_build *b) {
  uint32_t n = b->n_classes, order[256], inv[256];
  if (n > 256) return -E2BIG;
  if (n == 0) return 0; /* a header and no rows: srv_ds_check says so */
  int numeric = 1;
  for (uint32_t i = 0; i < n; i++) {
    unsigned long v;
    if (!is_uint(b->classes[i], &v) || (b->classes[i][0] == '0' && b->classes[i][1]))
      numeric = 0;
    order[i] = i;
  }
  for (uint32_t i = 1; i < n; i++) {
    uint32_t k = order[i], j = i;
    for (; j > 0; j--) {
      const char *x = b->classes[order[j - 1]], *y = b->classes[k];
      int c = numeric ? (strtoul(x, NULL, 10) > strtoul(y, NULL, 10)) : strcmp(x, y) > 0;
      if (!c) break;
      order[j] = order[j - 1];
    }
    order[j] = k;
  }
  char *names[256];
  for (uint32_t i = 0; i < n; i++) {
    inv[order[i]] = i;
    names[i] = b->classes[order[i]];
  }
  memcpy(b->classes, names, n * sizeof *names);
  for (uint64_t i = 0; i < b->train.n; i++) b->train.labels[i] = (uint8_t)inv[b->train.labels[i]];
  for (uint64_t i = 0; i < b->test.n; i++) b->test.labels[i] = (uint8_t)inv[b->test.labels[i]];
  return 0;
}

/* ---------------------------------------------------------------- CSV */

/* Reads one line into buf (without the newline, '\r' dropped). 1: a line,
 * 0: end of file, -E2BIG: longer than the buffer. */
static int read_line(FILE *f, char *buf, size_t cap, size_t *len) {
  size_t n = 0;
  int c;
  while ((c = getc(f)) != EOF && c != '\n') {
    if (n + 1 >= cap) return -E2BIG;
    buf[n++] = (char)c;
  }
  if (c == EOF && n == 0) return 0;
  if (n && buf[n - 1] == '\r') n--;
  buf[n] = 0;
  *len = n;
  return 1;
}

static char *unquote(char *s) {
  size_t n = strlen(s);
  if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
    s[n - 1] = 0;
    return s + 1;
  }
  return s;
}

int srv_ds_parse_csv(FILE *f, const srv_ds_limits *lim, srv_ds_build *b, char *msg,
                     size_t msglen) {
  char *line = malloc(CSV_MAX_LINE);
  if (!line) return -ENOMEM;
  int rc;
  size_t len;
  uint64_t lineno = 1;
  snprintf(b->source_format, sizeof b->source_format, "csv");
  if ((rc = read_line(f, line, CSV_MAX_LINE, &len)) <= 0) {
    rc = rc ? fail(msg, msglen, -EINVAL, "line 1: longer than %d bytes", CSV_MAX_LINE)
            : fail(msg, msglen, -EINVAL, "the CSV is empty (expected a header "
                                         "label,pixel0,...,pixel783)");
    goto out;
  }
  char *h = line;
  if ((unsigned char)h[0] == 0xef && (unsigned char)h[1] == 0xbb && (unsigned char)h[2] == 0xbf)
    h += 3; /* UTF-8 byte order mark */
  size_t cols = 1;
  for (char *p = h; *p; p++) cols += *p == ',';
  char *first = unquote(strsep(&h, ","));
  if (strcasecmp(first, "label")) {
    rc = fail(msg, msglen, -EINVAL, "line 1: the first column must be \"label\" (Kaggle "
                                    "digit-recognizer style), not \"%.40s\"", first);
    goto out;
  }
  if (cols != 1 + IMG) {
    rc = fail(msg, msglen, -EINVAL, "line 1: %zu columns; expected label and 784 pixels "
                                    "(28x28 images)", cols);
    goto out;
  }
  uint8_t img[IMG];
  while ((rc = read_line(f, line, CSV_MAX_LINE, &len)) == 1) {
    lineno++;
    if (len == 0) continue;
    if (b->train.n >= lim->max_images) {
      rc = fail(msg, msglen, -E2BIG, "line %llu: more than %llu images, this server's limit",
                (unsigned long long)lineno, (unsigned long long)lim->max_images);
      goto out;
    }
    char *p = line, *lab = unquote(strsep(&p, ","));
    unsigned long v;
    if (lab[0] == '-' || (is_uint(lab, &v) && v > 255) ||
        (!is_uint(lab, &v) && strspn(lab, "0123456789") == strlen(lab) && *lab)) {
      rc = fail(msg, msglen, -EINVAL, "line %llu: label %.40s out of range (0..255)",
                (unsigned long long)lineno, lab);
      goto out;
    }
    if (!name_ok(lab, strlen(lab))) {
      rc = fail(msg, msglen, -EINVAL, "line %llu: the label is empty, longer than %d bytes or "
                "not UTF-8 text", (unsigned long long)lineno, SRV_DS_MAX_CLASS_NAME);
      goto out;
    }
    uint32_t k = 0;
    for (; p && k < IMG; k++) {
      char *fld = strsep(&p, ","), *end;
      long px = strtol(fld, &end, 10);
      if (!*fld || *end || px < 0 || px > 255 || fld[0] == '-' || fld[0] == '+' || fld[0] == ' ') {
        rc = fail(msg, msglen, -EINVAL, "line %llu, column %u: \"%.20s\" is not a pixel value "
                  "0..255", (unsigned long long)lineno, k + 2, fld);
        goto out;
      }
      img[k] = (uint8_t)px;
    }
    if (k != IMG || p) {
      size_t extra = 0;
      for (; p; extra++) strsep(&p, ",");
      rc = fail(msg, msglen, -EINVAL, "line %llu: %zu pixel values, expected 784 (a row of the "
                "wrong width)", (unsigned long long)lineno, (size_t)k + extra);
      goto out;
    }
    uint32_t c;
    rc = class_of(b, lab, strlen(lab), lim->max_classes, &c);
    if (rc == -E2BIG) {
      rc = fail(msg, msglen, -E2BIG, "line %llu: label %.40s makes more than %u classes",
                (unsigned long long)lineno, lab, lim->max_classes);
      goto out;
    }
    if (rc == -EEXIST) rc = 0; /* labels are case-sensitive in a CSV */
    if (rc || (rc = split_push(&b->train, img, (uint8_t)c))) goto out;
  }
  if (rc < 0) {
    rc = fail(msg, msglen, -EINVAL, "line %llu: longer than %d bytes",
              (unsigned long long)lineno + 1, CSV_MAX_LINE);
    goto out;
  }
  if ((rc = sort_classes(b))) goto out;
  /* Integer labels name classes 0..max: a gap is an empty class. */
  int numeric = b->n_classes > 0;
  unsigned long v;
  for (uint32_t i = 0; i < b->n_classes && numeric; i++) numeric = is_uint(b->classes[i], &v);
  if (numeric) {
    unsigned long max = strtoul(b->classes[b->n_classes - 1], NULL, 10);
    for (unsigned long i = 0, j = 0; i <= max; i++, j++)
      if (j >= b->n_classes || strtoul(b->classes[j], NULL, 10) != i) {
        rc = fail(msg, msglen, -EINVAL, "label %lu: empty class (no row has it, but a "
                  "larger label does)", i);
        goto out;
      }
  }
  rc = 0;
out:
  free(line);
  return rc;
}

/* ---------------------------------------------------------------- archives */

static const char *const IDX_NAMES[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

typedef struct walk {
  const srv_ds_limits *lim;
  int preprocess;
  uint64_t total;
  int folders, idx;
  uint8_t *idxbuf[4];
  size_t idxlen[4];
  char *classes_txt;
  size_t classes_len;
  uint64_t *train_count; /* per class (parallel to b->classes) */
  uint32_t n_counted;
  char *msg;
  size_t msglen;
} walk;

/* Reads the entry's data, at most cap bytes (more: -E2BIG), counting the
 * archive's total. */
static int read_entry(struct archive *a, walk *w, const char *path, uint64_t cap,
                      uint8_t **out, size_t *len) {
  size_t n = 0, sz = 0;
  uint8_t *buf = NULL;
  for (;;) {
    if (n == sz) {
      size_t nsz = sz ? sz * 2 : 65536;
      uint8_t *nb = realloc(buf, nsz);
      if (!nb) {
        free(buf);
        return -ENOMEM;
      }
      buf = nb;
      sz = nsz;
    }
    la_ssize_t got = archive_read_data(a, buf + n, sz - n);
    if (got < 0) {
      free(buf);
      return fail(w->msg, w->msglen, -EINVAL, "%.200s: the archive is damaged or truncated (%.200s)",
                  path, archive_error_string(a) ? archive_error_string(a) : "read error");
    }
    if (got == 0) break;
    n += (size_t)got;
    w->total += (uint64_t)got;
    if (n > cap || w->total > w->lim->max_archive_bytes) {
      free(buf);
      return n > cap ? fail(w->msg, w->msglen, -E2BIG, "%.200s: larger than %llu bytes, this "
                            "server's limit for one entry", path, (unsigned long long)cap)
                     : fail(w->msg, w->msglen, -E2BIG, "%.200s: the archive unpacks to more than "
                            "%llu bytes, this server's limit", path,
                            (unsigned long long)w->lim->max_archive_bytes);
    }
  }
  *out = buf;
  *len = n;
  return 0;
}

/* Area-averaging scale to 28x28, nothing else (?preprocess=none). */
static void scale_plain(const srv_gray *g, uint8_t out[IMG]) {
  for (uint32_t y = 0; y < 28; y++)
    for (uint32_t x = 0; x < 28; x++) {
      uint64_t y0 = (uint64_t)y * g->h / 28, y1 = ((uint64_t)y + 1) * g->h / 28;
      uint64_t x0 = (uint64_t)x * g->w / 28, x1 = ((uint64_t)x + 1) * g->w / 28;
      if (y1 == y0) y1 = y0 + 1;
      if (x1 == x0) x1 = x0 + 1;
      uint64_t s = 0, c = 0;
      for (uint64_t yy = y0; yy < y1 && yy < g->h; yy++)
        for (uint64_t xx = x0; xx < x1 && xx < g->w; xx++, c++) s += g->px[yy * g->w + xx];
      out[y * 28 + x] = (uint8_t)(c ? (s + c / 2) / c : 0);
    }
}

static int add_image(struct archive *a, walk *w, srv_ds_build *b, const char *path, int test,
                     const char *cls, size_t cls_len) {
  if (!name_ok(cls, cls_len))
    return fail(w->msg, w->msglen, -EINVAL, "%.200s: the class folder name is longer than %d "
                "bytes or not UTF-8 text", path, SRV_DS_MAX_CLASS_NAME);
  uint32_t c;
  int rc = class_of(b, cls, cls_len, w->lim->max_classes, &c);
  if (rc == -EEXIST)
    return fail(w->msg, w->msglen, -EINVAL, "%.200s: class folder \"%.*s\" differs from \"%s\" "
                "only in case", path, (int)cls_len, cls, b->classes[c]);
  if (rc == -E2BIG)
    return fail(w->msg, w->msglen, -E2BIG, "%.200s: more than %u classes, this server's limit",
                path, w->lim->max_classes);
  if (rc) return rc;
  if (b->n_classes > w->n_counted) {
    uint64_t *tc = realloc(w->train_count, b->n_classes * sizeof *tc);
    if (!tc) return -ENOMEM;
    memset(tc + w->n_counted, 0, (b->n_classes - w->n_counted) * sizeof *tc);
    w->train_count = tc;
    w->n_counted = b->n_classes;
  }
  if (!path[strlen(path) - 1] || path[strlen(path) - 1] == '/') return 0; /* a folder */
  if (b->train.n + b->test.n >= w->lim->max_images)
    return fail(w->msg, w->msglen, -E2BIG, "%.200s: more than %llu images, this server's limit",
                path, (unsigned long long)w->lim->max_images);
  uint8_t *buf;
  size_t len;
  if ((rc = read_entry(a, w, path, w->lim->max_image_bytes, &buf, &len))) return rc;
  srv_gray g = {0};
  char why[256] = "";
  srv_image_format fmt = srv_image_sniff(NULL, buf, len);
  if (fmt == SRV_IMAGE_PNG) rc = srv_image_decode_png(buf, len, &g, why, sizeof why);
  else if (fmt == SRV_IMAGE_PGM) rc = srv_image_decode_pgm(buf, len, &g, why, sizeof why);
  else rc = -EINVAL, snprintf(why, sizeof why, "not a PNG or PGM image (bad signature)");
  free(buf);
  if (rc) return fail(w->msg, w->msglen, rc == -E2BIG ? -E2BIG : rc == -ENOMEM ? -ENOMEM : -EINVAL,
                      "%.200s: %.300s", path, why);
  uint8_t img[IMG];
  int empty;
  if (w->preprocess) rc = srv_image_to_mnist(&g, img, &empty);
  else scale_plain(&g, img);
  srv_gray_free(&g);
  if (rc) return fail(w->msg, w->msglen, -EINVAL, "%.200s: %s", path, srv_image_strerror(rc));
  if (!test) w->train_count[c]++;
  return split_push(test ? &b->test : &b->train, img, (uint8_t)c);
}

/* Splits path into components; returns their count (up to 8). */
static int components(char *p, char *comp[8]) {
  int n = 0;
  for (char *s; (s = strsep(&p, "/"));) {
    if (!*s || !strcmp(s, ".")) continue;
    if (n == 8) return 9;
    comp[n++] = s;
  }
  return n;
}

static int is_hidden(char *comp[8], int n) {
  for (int i = 0; i < n; i++)
    if (comp[i][0] == '.' || !strcmp(comp[i], "__MACOSX")) return 1;
  return 0;
}

static int one_entry(struct archive *a, struct archive_entry *e, walk *w, srv_ds_build *b) {
  const char *path = archive_entry_pathname(e);
  if (!path || !*path) return fail(w->msg, w->msglen, -EINVAL, "an archive entry has no name");
  if (path[0] == '/' || strchr(path, '\\') || (path[0] && path[1] == ':'))
    return fail(w->msg, w->msglen, -EINVAL, "%.200s: absolute paths are not accepted", path);
  if (archive_entry_hardlink(e))
    return fail(w->msg, w->msglen, -EINVAL, "%.200s: hard links are not accepted", path);
  unsigned type = archive_entry_filetype(e);
  if (type == AE_IFLNK || archive_entry_symlink(e))
    return fail(w->msg, w->msglen, -EINVAL, "%.200s: symbolic links are not accepted", path);
  if (type != AE_IFREG && type != AE_IFDIR)
    return fail(w->msg, w->msglen, -EINVAL, "%.200s: not a regular file or folder", path);
  char copy[1024], *comp[8];
  if (strlen(path) >= sizeof copy)
    return fail(w->msg, w->msglen, -EINVAL, "%.200s...: path longer than 1023 bytes", path);
  snprintf(copy, sizeof copy, "%s", path);
  int n = components(copy, comp);
  for (int i = 0; i < n && i < 8; i++)
    if (!strcmp(comp[i], ".."))
      return fail(w->msg, w->msglen, -EINVAL, "%.200s: \"..\" in a path is not accepted", path);
  if (n > 8) return fail(w->msg, w->msglen, -EINVAL, "%.200s: nested too deep", path);
  if (n == 0 || is_hidden(comp, n)) return 0;
  /* One enclosing folder (a zip of "myset/") is allowed. */
  int o = (n >= 2 && strcmp(comp[0], "train") && strcmp(comp[0], "test")) ? 1 : 0;
  int dir = type == AE_IFDIR;
  if (n - o >= 2 && (!strcmp(comp[o], "train") || !strcmp(comp[o], "test")) && n - o <= 3) {
    int test = comp[o][1] == 'e';
    if (n - o == 2 && !dir)
      return fail(w->msg, w->msglen, -EINVAL, "%.200s: images go in a class folder "
                  "(%s/<class>/<image>)", path, comp[o]);
    if (n - o == 3 && dir)
      return fail(w->msg, w->msglen, -EINVAL, "%.200s: folders inside a class folder are not "
                  "accepted", path);
    w->folders = 1;
    char cls[SRV_DS_MAX_CLASS_NAME * 4 + 2];
    snprintf(cls, sizeof cls, "%s%s", comp[o + 1], dir ? "/" : "");
    size_t cl = strlen(comp[o + 1]);
    if (dir) {
      /* register the class so that an empty folder is reported */
      char p2[1100];
      snprintf(p2, sizeof p2, "%s/", path);
      if (test) return 0;
      return add_image(a, w, b, p2, 0, comp[o + 1], cl);
    }
    return add_image(a, w, b, path, test, comp[o + 1], cl);
  }
  if (dir) return 0;
  const char *base = comp[n - 1];
  if (n - o == 1 || n == 1) {
    if (!strcmp(base, "classes.txt")) {
      w->idx = 1;
      if (w->classes_txt)
        return fail(w->msg, w->msglen, -EINVAL, "%.200s: a second classes.txt", path);
      uint8_t *buf = NULL; /* read_entry sets it only on success */
      int rc = read_entry(a, w, path, 1 << 20, &buf, &w->classes_len);
      w->classes_txt = (char *)buf;
      return rc;
    }
    for (int i = 0; i < 4; i++) {
      size_t l = strlen(IDX_NAMES[i]);
      if (strncmp(base, IDX_NAMES[i], l) || (base[l] && strcmp(base + l, ".gz"))) continue;
      if (w->idxbuf[i])
        return fail(w->msg, w->msglen, -EINVAL, "%.200s: a second %s", path, IDX_NAMES[i]);
      w->idx = 1;
      return read_entry(a, w, path, w->lim->max_archive_bytes, &w->idxbuf[i], &w->idxlen[i]);
    }
  }
  return fail(w->msg, w->msglen, -EINVAL, "%.200s: unexpected entry (expected train/<class>/"
              "<image>, test/<class>/<image>, the four MNIST IDX files or classes.txt)", path);
}

/* Inflates a gzip buffer in place of *buf. The archive's byte budget
 * (max_archive_bytes, which counted this entry's compressed bytes) is
 * charged the inflated size instead: an IDX file compressed inside the
 * archive cannot unpack past the budget the archive as a whole has. zlib
 * counts in uInt (32 bits): input and output go in pieces, so budgets
 * above 4 GiB work. */
static int gunzip(uint8_t **buf, size_t *len, const char *name, walk *w) {
  if (*len < 2 || (*buf)[0] != 0x1f || (*buf)[1] != 0x8b) return 0;
  const uint64_t max = w->lim->max_archive_bytes, others = w->total - *len;
  const uint64_t cap = max > others ? max - others : 0;
  z_stream z = {0};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return -ENOMEM;
  size_t sz = cap < (1 << 20) ? (size_t)cap + 1 : 1 << 20, n = 0, in = 0;
  uint8_t *out = malloc(sz);
  int rc = out ? 0 : -ENOMEM, zr = Z_OK;
  while (!rc && zr != Z_STREAM_END) {
    if (n > cap) {
      rc = fail(w->msg, w->msglen, -E2BIG, "%s: unpacks to more than %llu bytes, what is left "
                "of this server's limit for the archive (--max-archive-bytes %llu)", name,
                (unsigned long long)cap, (unsigned long long)max);
      break;
    }
    if (n == sz) { /* grow, never past cap + 1 (one byte shows the excess) */
      size_t nsz = sz > (cap + 1) / 2 ? (size_t)cap + 1 : sz * 2;
      uint8_t *no = realloc(out, nsz);
      if (!no) {
        rc = -ENOMEM;
        break;
      }
      out = no;
      sz = nsz;
    }
    if (z.avail_in == 0 && in < *len) {
      z.next_in = *buf + in;
      z.avail_in = (uInt)(*len - in < UINT_MAX ? *len - in : UINT_MAX);
      in += z.avail_in;
    }
    size_t room = sz - n < UINT_MAX ? sz - n : UINT_MAX;
    z.next_out = out + n;
    z.avail_out = (uInt)room;
    zr = inflate(&z, Z_NO_FLUSH);
    n += room - z.avail_out;
    if (zr == Z_BUF_ERROR && z.avail_in == 0 && in == *len) zr = Z_DATA_ERROR; /* truncated */
    if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
      rc = fail(w->msg, w->msglen, -EINVAL, "%s: damaged or truncated gzip data", name);
  }
  if (!rc && n > cap)
    rc = fail(w->msg, w->msglen, -E2BIG, "%s: unpacks to more than %llu bytes, what is left "
              "of this server's limit for the archive (--max-archive-bytes %llu)", name,
              (unsigned long long)cap, (unsigned long long)max);
  inflateEnd(&z);
  if (rc) {
    free(out);
    return rc;
  }
  w->total = others + n;
  free(*buf);
  *buf = out;
  *len = n;
  return 0;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Adds one IDX pair (images i, labels i+1) to split s. */
static int idx_pair(walk *w, srv_ds_build *b, int i, srv_ds_split *s) {
  int rc;
  for (int k = i; k < i + 2; k++)
    if ((rc = gunzip(&w->idxbuf[k], &w->idxlen[k], IDX_NAMES[k], w)))
      return rc;
  const uint8_t *im = w->idxbuf[i], *lb = w->idxbuf[i + 1];
  size_t il = w->idxlen[i], ll = w->idxlen[i + 1];
  if (il < 16 || be32(im) != 0x803)
    return fail(w->msg, w->msglen, -EINVAL, "%s: not an IDX file of uint8 images (magic "
                "0x00000803)", IDX_NAMES[i]);
  if (ll < 8 || be32(lb) != 0x801)
    return fail(w->msg, w->msglen, -EINVAL, "%s: not an IDX file of uint8 labels (magic "
                "0x00000801)", IDX_NAMES[i + 1]);
  uint32_t n = be32(im + 4), rows = be32(im + 8), cols = be32(im + 12);
  if (rows != 28 || cols != 28)
    return fail(w->msg, w->msglen, -EINVAL, "%s: images are %ux%u; IDX uploads must be 28x28",
                IDX_NAMES[i], rows, cols);
  if (be32(lb + 4) != n)
    return fail(w->msg, w->msglen, -EINVAL, "%s: %u labels for %u images", IDX_NAMES[i + 1],
                be32(lb + 4), n);
  if ((uint64_t)n + b->train.n + b->test.n > w->lim->max_images)
    return fail(w->msg, w->msglen, -E2BIG, "%s: more than %llu images, this server's limit",
                IDX_NAMES[i], (unsigned long long)w->lim->max_images);
  if (il != 16 + (uint64_t)n * IMG || ll != 8 + (uint64_t)n)
    return fail(w->msg, w->msglen, -EINVAL, "%s: %s than its header says", il < 16 + (uint64_t)n * IMG ||
                ll < 8 + (uint64_t)n ? "shorter" : "longer",
                il != 16 + (uint64_t)n * IMG ? IDX_NAMES[i] : IDX_NAMES[i + 1]);
  for (uint32_t k = 0; k < n; k++) {
    if (lb[8 + k] >= b->n_classes)
      return fail(w->msg, w->msglen, -EINVAL, "%s: label %u of item %u is out of range (%u "
                  "classes)", IDX_NAMES[i + 1], lb[8 + k], k, b->n_classes);
    if ((rc = split_push(s, im + 16 + (size_t)k * IMG, lb[8 + k]))) return rc;
  }
  return 0;
}

static int idx_finish(walk *w, srv_ds_build *b) {
  snprintf(b->source_format, sizeof b->source_format, "idx");
  if (!w->idxbuf[0] || !w->idxbuf[1])
    return fail(w->msg, w->msglen, -EINVAL, "the archive has IDX files but not both %s and %s",
                IDX_NAMES[0], IDX_NAMES[1]);
  if (!w->idxbuf[2] != !w->idxbuf[3])
    return fail(w->msg, w->msglen, -EINVAL, "%s without %s", w->idxbuf[2] ? IDX_NAMES[2] : IDX_NAMES[3],
                w->idxbuf[2] ? IDX_NAMES[3] : IDX_NAMES[2]);
  int rc;
  if (w->classes_txt) {
    char *p = w->classes_txt, *end = p + w->classes_len;
    uint32_t line = 0;
    while (p < end) {
      char *nl = memchr(p, '\n', (size_t)(end - p));
      size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
      line++;
      size_t ll = l;
      while (ll && (p[ll - 1] == '\r' || p[ll - 1] == ' ')) ll--;
      if (ll) {
        uint32_t c;
        if (!name_ok(p, ll))
          return fail(w->msg, w->msglen, -EINVAL, "classes.txt line %u: a name longer than %d "
                      "bytes or not UTF-8 text", line, SRV_DS_MAX_CLASS_NAME);
        rc = class_of(b, p, ll, w->lim->max_classes, &c);
        if (rc == -E2BIG)
          return fail(w->msg, w->msglen, -E2BIG, "classes.txt: more than %u classes",
                      w->lim->max_classes);
        if (!rc && c != b->n_classes - 1) rc = -EEXIST;
        if (rc == -EEXIST)
          return fail(w->msg, w->msglen, -EINVAL, "classes.txt line %u: \"%.*s\" is there twice "
                      "(or differs from another only in case)", line, (int)ll, p);
        if (rc) return rc;
      }
      p += l + 1;
    }
  } else {
    /* No classes.txt: classes "0".."max label" of the training labels. */
    if ((rc = gunzip(&w->idxbuf[1], &w->idxlen[1], IDX_NAMES[1], w)))
      return rc;
    uint32_t max = 0;
    for (size_t k = 8; k < w->idxlen[1]; k++)
      if (w->idxbuf[1][k] > max) max = w->idxbuf[1][k];
    if (max + 1 > w->lim->max_classes)
      return fail(w->msg, w->msglen, -E2BIG, "%s: label %u makes more than %u classes, this "
                  "server's limit", IDX_NAMES[1], max, w->lim->max_classes);
    for (uint32_t k = 0; k <= max; k++) {
      char nm[12];
      uint32_t c;
      snprintf(nm, sizeof nm, "%u", k);
      if ((rc = class_of(b, nm, strlen(nm), w->lim->max_classes, &c))) return rc;
    }
  }
  if ((rc = idx_pair(w, b, 0, &b->train))) return rc;
  if (w->idxbuf[2] && (rc = idx_pair(w, b, 2, &b->test))) return rc;
  b->has_test = w->idxbuf[2] != NULL;
  return 0;
}

int srv_ds_parse_archive(struct archive *a, const srv_ds_limits *lim, int preprocess,
                         srv_ds_build *b, char *msg, size_t msglen) {
  walk w = {.lim = lim, .preprocess = preprocess, .msg = msg, .msglen = msglen};
  struct archive_entry *e;
  uint64_t entries = 0;
  int rc = 0, r;
  while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
    if (++entries > lim->max_entries) {
      rc = fail(msg, msglen, -E2BIG, "more than %llu archive entries, this server's limit",
                (unsigned long long)lim->max_entries);
      goto out;
    }
    if ((rc = one_entry(a, e, &w, b))) goto out;
    if (w.folders && w.idx) {
      rc = fail(msg, msglen, -EINVAL, "%.200s: the archive mixes class folders and IDX files; "
                "send one kind", archive_entry_pathname(e));
      goto out;
    }
  }
  if (r != ARCHIVE_EOF) {
    const char *why = archive_error_string(a);
    rc = fail(msg, msglen, -EINVAL, "%s after %llu entries: %.200s",
              entries ? "the archive is damaged or truncated" : "not a zip, tar or tar.gz archive",
              (unsigned long long)entries, why ? why : "unreadable");
    goto out;
  }
  if (w.idx) {
    rc = idx_finish(&w, b);
    goto out;
  }
  if (!w.folders) {
    rc = fail(msg, msglen, -EINVAL, "the archive holds no train/<class>/<image> folders and no "
              "IDX files");
    goto out;
  }
  snprintf(b->source_format, sizeof b->source_format, "png-folders");
  for (uint32_t c = 0; c < b->n_classes; c++)
    if (!w.train_count[c]) {
      int in_test = 0;
      for (uint64_t i = 0; i < b->test.n && !in_test; i++) in_test = b->test.labels[i] == c;
      rc = fail(msg, msglen, -EINVAL, in_test ? "test/%s: no train/%s folder with images for "
                "this class" : "train/%s: empty class (no images)", b->classes[c],
                b->classes[c]);
      goto out;
    }
  b->has_test = b->test.n > 0;
  rc = sort_classes(b);
out:
  for (int i = 0; i < 4; i++) free(w.idxbuf[i]);
  free(w.classes_txt);
  free(w.train_count);
  return rc;
}

/* ---------------------------------------------------------------- split and checks */

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int srv_ds_hold_out(srv_ds_build *b, double fraction, uint64_t seed) {
  if (!(fraction > 0 && fraction < 1)) return -EINVAL;
  uint64_t n = b->train.n;
  uint8_t *to_test = calloc(n ? n : 1, 1);
  uint64_t *idx = malloc((n ? n : 1) * sizeof *idx);
  int rc = -ENOMEM;
  if (!to_test || !idx) goto out;
  for (uint32_t c = 0; c < b->n_classes; c++) {
    uint64_t m = 0, st = seed ^ ((uint64_t)c * 0x100000001b3ull);
    for (uint64_t i = 0; i < n; i++)
      if (b->train.labels[i] == c) idx[m++] = i;
    for (uint64_t i = m; i > 1; i--) { /* Fisher-Yates */
      uint64_t j = splitmix(&st) % i, t = idx[i - 1];
      idx[i - 1] = idx[j];
      idx[j] = t;
    }
    uint64_t k = (uint64_t)((double)m * fraction + 0.5);
    if (k >= m) k = m ? m - 1 : 0; /* keep one to train on */
    for (uint64_t i = 0; i < k; i++) to_test[idx[i]] = 1;
  }
  srv_ds_split tr = {0}, te = {0};
  for (uint64_t i = 0; i < n; i++)
    if ((rc = split_push(to_test[i] ? &te : &tr, b->train.images + i * IMG, b->train.labels[i]))) {
      split_free(&tr);
      split_free(&te);
      goto out;
    }
  split_free(&b->train);
  split_free(&b->test);
  b->train = tr;
  b->test = te;
  rc = 0;
out:
  free(to_test);
  free(idx);
  return rc;
}

int srv_ds_check(const srv_ds_build *b, const srv_ds_limits *lim, char *msg, size_t msglen) {
  if (b->n_classes < 2)
    return fail(msg, msglen, -EINVAL, "%u class%s; a data set needs at least 2", b->n_classes,
                b->n_classes == 1 ? "" : "es");
  if (b->n_classes > lim->max_classes)
    return fail(msg, msglen, -E2BIG, "%u classes; this server takes at most %u", b->n_classes,
                lim->max_classes);
  if (b->train.n + b->test.n > lim->max_images)
    return fail(msg, msglen, -E2BIG, "more than %llu images, this server's limit",
                (unsigned long long)lim->max_images);
  uint64_t *cnt = calloc(b->n_classes, sizeof *cnt);
  if (!cnt) return -ENOMEM;
  for (uint64_t i = 0; i < b->train.n; i++) cnt[b->train.labels[i]]++;
  int rc = 0;
  for (uint32_t c = 0; c < b->n_classes && !rc; c++)
    if (!cnt[c]) rc = fail(msg, msglen, -EINVAL, "class %s has no training images (empty class)",
                           b->classes[c]);
  free(cnt);
  if (!rc && b->test.n == 0)
    rc = fail(msg, msglen, -EINVAL, "no test images (the test part is empty; send more images "
              "per class or a test/ part)");
  return rc;
}
