/*
 * idx.c — MNIST-style IDX files (plain or gzip) and the nn_dataset built
 * from them.
 *
 * An IDX file is a big-endian header followed by the raw payload:
 *
 *   byte 0-1  zero
 *   byte 2    data type (0x08 = unsigned byte, the only one we accept)
 *   byte 3    number of dimensions (3 for images, 1 for labels)
 *   then      one u32 per dimension (count, rows, cols / count)
 *   then      the product of the dimensions in bytes, and nothing more.
 *
 * Everything is read through zlib's gz* API. gzread decompresses gzip
 * streams and passes anything else through untouched, so "foo" and
 * "foo.gz" share one code path and the format is decided by content, not by
 * the file name. The files come from the outside world, so every field is
 * checked before it is trusted and the payload size is bounded before
 * anything is allocated.
 */
#include "nn_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_TYPE_U8 0x08
#define IDX_MAX_DIMS 3
#define IDX_IMAGE_DIMS 3
#define IDX_LABEL_DIMS 1
/* zlib's default input buffer is 8 KiB, i.e. thousands of read(2) calls
 * for a 26 MB .gz; 256 KiB makes that about a hundred and is still small.
 * (Plain files are read straight into the payload buffer either way.) */
#define IDX_GZ_BUFFER (256u * 1024u)
/* gzread takes an unsigned length but returns an int, so one call must stay
 * below INT_MAX. */
#define IDX_READ_CHUNK (1u << 30)

#ifdef PATH_MAX
#define IDX_PATH_MAX PATH_MAX
#else
#define IDX_PATH_MAX 4096
#endif


/* ---------------------------------------------------------------- helpers */


/* strerror() is not thread-safe and the daemon may load data sets from a
 * worker thread, so use strerror_r, whose return type depends on the libc. */
static const char *idx_errno_text(int e, char *buf, size_t len) {
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
  return strerror_r(e, buf, len);
#else
  if (strerror_r(e, buf, len) != 0)
    snprintf(buf, len, "error %d", e);
  return buf;
#endif
}

static int idx_errno_fail(nn_err *err, const char *path, const char *what,
                          int e) {
  char buf[128];

  if (e == ENOENT)
    return nn_fail(err, NN_ENOENT, "%s: no such file", path);
  if (e == ENOMEM)
    return nn_fail(err, NN_ENOMEM, "%s: out of memory while opening",
                    path);
  return nn_fail(err, NN_EIO, "%s: %s: %s", path, what,
                  idx_errno_text(e, buf, sizeof(buf)));
}

static uint32_t idx_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

static const char *idx_type_name(uint8_t type) {
  switch (type) {
  case 0x08: return "unsigned byte";
  case 0x09: return "signed byte";
  case 0x0B: return "short";
  case 0x0C: return "int";
  case 0x0D: return "float";
  case 0x0E: return "double";
  default:   return "not an IDX type";
  }
}

/* Turns the error state of a gzFile into an NN_E* code and message. */
static int idx_gz_fail(nn_err *err, gzFile gz, const char *path) {
  int zerr = Z_OK;
  const char *msg = gzerror(gz, &zerr);
  const char *sep;

  /* gzdopen names the stream "<fd:N>" and prefixes its messages with that
   * name; we print the real path instead. */
  if (strncmp(msg, "<fd:", 4) == 0 && (sep = strstr(msg, ": ")) != NULL)
    msg = sep + 2;
  switch (zerr) {
  case Z_MEM_ERROR:
    return nn_fail(err, NN_ENOMEM, "%s: out of memory while decompressing",
                    path);
  case Z_DATA_ERROR:
    return nn_fail(err, NN_EFORMAT, "%s: corrupt gzip data: %s", path, msg);
  default:
    return nn_fail(err, NN_EIO, "%s: read error: %s", path, msg);
  }
}

/* True when zlib stopped because the gzip stream ended early. gzread treats
 * that as a soft error (it returns what it has), so the caller must ask. */
static int idx_gz_cut(gzFile gz) {
  int zerr = Z_OK;

  (void)gzerror(gz, &zerr);
  return zerr == Z_BUF_ERROR;
}

/* Reads up to len bytes into buf; *got says how many arrived. Stopping
 * short at the end of the input is not an error here: only the caller
 * knows how much it expected and can say so. Read errors and corrupt gzip
 * data are errors. */
static int idx_read_full(gzFile gz, const char *path, uint8_t *buf,
                         size_t len, size_t *got, nn_err *err) {
  size_t done = 0;

  while (done < len) {
    size_t want = len - done;
    int r;

    if (want > IDX_READ_CHUNK)
      want = IDX_READ_CHUNK;
    r = gzread(gz, buf + done, (unsigned)want);
    if (r < 0) {
      *got = done;
      return idx_gz_fail(err, gz, path);
    }
    if (r == 0)
      break;
    done += (size_t)r;
  }
  *got = done;
  return 0;
}

/* The first allocation for a compressed payload. A few hundred bytes of
 * gzip can claim a 1 GiB payload; the buffer then grows (doubling) only as
 * decompressed bytes actually arrive, so a lying header costs at most
 * twice what the stream really holds. */
#define IDX_GZ_FIRST_ALLOC ((size_t)1 << 20)

/* Reads the payload into an nn_halloc'd *out (the caller frees it, also on
 * error). A plain file was already checked against its size and gets one
 * allocation; a compressed one grows with the data. *got is what arrived.
 * Returns 0, NN_ENOMEM (message left to the caller) or a read error. */
static int idx_read_payload(gzFile gz, const char *path, size_t payload,
                            int grow, uint8_t **out, size_t *got,
                            nn_err *err) {
  size_t cap = grow && payload > IDX_GZ_FIRST_ALLOC ? IDX_GZ_FIRST_ALLOC
                                                    : payload;
  size_t done = 0;
  uint8_t *buf = nn_halloc(cap);

  *out = NULL;
  *got = 0;
  if (buf == NULL)
    return NN_ENOMEM;
  for (;;) {
    size_t n = 0;
    int rc = idx_read_full(gz, path, buf + done, cap - done, &n, err);

    done += n;
    if (rc != 0 || done < cap || cap == payload) {
      *out = buf;
      *got = done;
      return rc;
    }
    /* Not realloc: the bigger buffer wants huge pages before it is
     * touched, and realloc would move the old pages as they are. */
    size_t next = cap > payload / 2 ? payload : cap * 2;
    uint8_t *bigger = nn_halloc(next);
    if (bigger == NULL) {
      free(buf);
      return NN_ENOMEM;
    }
    memcpy(bigger, buf, done);
    free(buf);
    buf = bigger;
    cap = next;
  }
}

/* Describes the bytes found, for truncation messages: "1000", or "1000 once
 * decompressed; the gzip stream ends early". */
static const char *idx_found(gzFile gz, size_t got, char *buf, size_t len) {
  snprintf(buf, len, "%zu%s%s", got, gzdirect(gz) ? "" : " once decompressed",
           idx_gz_cut(gz) ? "; the gzip stream ends early" : "");
  return buf;
}

/* Checks the 4 magic bytes against what the caller wants (uint8 data with
 * ndims dimensions). */
static int idx_check_magic(const char *path, const uint8_t *m,
                           unsigned ndims, nn_err *err) {
  const char *want = ndims == IDX_IMAGE_DIMS ? "images" : "labels";
  const char *hint = "";

  if (m[0] != 0 || m[1] != 0)
    return nn_fail(err, NN_EFORMAT,
                    "%s: not an IDX file: magic 0x%08x, expected 0x%08x "
                    "(uint8 %s)",
                    path, idx_be32(m), 0x0800u | ndims, want);
  if (m[2] != IDX_TYPE_U8)
    return nn_fail(err, NN_EFORMAT,
                    "%s: IDX data type 0x%02x (%s), expected 0x08 (unsigned "
                    "byte)",
                    path, (unsigned)m[2], idx_type_name(m[2]));
  if (m[3] != ndims) {
    /* The usual cause is swapping the image and label paths. */
    if (ndims == IDX_IMAGE_DIMS && m[3] == IDX_LABEL_DIMS)
      hint = " (is this a label file?)";
    else if (ndims == IDX_LABEL_DIMS && m[3] == IDX_IMAGE_DIMS)
      hint = " (is this an image file?)";
    return nn_fail(err, NN_EFORMAT,
                    "%s: IDX file has %u dimension%s, expected %u for %s%s",
                    path, (unsigned)m[3], m[3] == 1 ? "" : "s", ndims, want, hint);
  }
  return 0;
}

/* Decodes and bounds the dimensions; *payload gets their product. */
static int idx_check_dims(const char *path, const uint8_t *hdr,
                          unsigned ndims, uint32_t *dims, size_t *payload,
                          nn_err *err) {
  static const char *const names[2][IDX_MAX_DIMS] = {
      {"label count", "", ""},
      {"image count", "rows", "columns"},
  };
  const char *const *name = names[ndims == IDX_IMAGE_DIMS];
  const char *unit = ndims == IDX_IMAGE_DIMS ? "pixel" : "label";
  uint64_t total = 1;
  unsigned i;

  for (i = 0; i < ndims; i++) {
    dims[i] = idx_be32(hdr + 4 + 4 * i);
    if (dims[i] == 0)
      return nn_fail(err, NN_EFORMAT, "%s: IDX header says %s is 0", path,
                      name[i]);
  }
  if (dims[0] > NN_IDX_MAX_ITEMS)
    return nn_fail(err, NN_ETOOBIG,
                    "%s: IDX header says %s is %u, more than the limit of %u",
                    path, name[0], dims[0], NN_IDX_MAX_ITEMS);
  /* Multiply one dimension at a time, checking before each step, so the
   * product can neither overflow nor pass the limit unnoticed. */
  for (i = 0; i < ndims; i++) {
    if (dims[i] > NN_IDX_MAX_BYTES / total) {
      if (ndims == IDX_IMAGE_DIMS)
        return nn_fail(err, NN_ETOOBIG,
                        "%s: IDX header says %u x %u x %u %s bytes, more "
                        "than the limit of %u",
                        path, dims[0], dims[1], dims[2], unit,
                        NN_IDX_MAX_BYTES);
      return nn_fail(err, NN_ETOOBIG,
                      "%s: IDX header says %u %s bytes, more than the limit "
                      "of %u",
                      path, dims[0], unit, NN_IDX_MAX_BYTES);
    }
    total *= dims[i];
  }
  *payload = (size_t)total;
  return 0;
}

/* Reads a uint8 IDX file with ndims dimensions. On success *out is a
 * malloc'd payload of *out_len bytes and dims[] holds the dimensions; on
 * failure nothing is allocated. */
static int idx_read(const char *path, unsigned ndims, uint32_t *dims,
                    uint8_t **out, size_t *out_len, nn_err *err) {
  const char *unit = ndims == IDX_IMAGE_DIMS ? "pixel" : "label";
  const char *kind = ndims == IDX_IMAGE_DIMS ? "image" : "label";
  size_t hdr_len = 4 + 4 * (size_t)ndims;
  uint8_t hdr[4 + 4 * IDX_MAX_DIMS];
  uint8_t extra;
  char found[96];
  size_t payload = 0, got = 0;
  uint8_t *buf = NULL;
  gzFile gz = NULL;
  struct stat st;
  int fd, rc;

  /* open(2) ourselves rather than gzopen: errno is then reliable (missing
   * file vs. other failures) and fstat can see what we opened. */
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return idx_errno_fail(err, path, "cannot open", errno);
  if (fstat(fd, &st) != 0) {
    rc = idx_errno_fail(err, path, "cannot stat", errno);
    goto out;
  }
  if (S_ISDIR(st.st_mode)) {
    rc = nn_fail(err, NN_EIO, "%s: is a directory, not an IDX file", path);
    goto out;
  }
  gz = gzdopen(fd, "rb");
  if (gz == NULL) {
    /* gzdopen fails only for lack of memory (the mode is fixed); fd is
     * still ours to close. */
    rc = nn_fail(err, NN_ENOMEM, "%s: out of memory opening the file", path);
    goto out;
  }
  /* Must come before the first read; it cannot fail then. */
  (void)gzbuffer(gz, IDX_GZ_BUFFER);

  rc = idx_read_full(gz, path, hdr, hdr_len, &got, err);
  if (rc != 0)
    goto out;
  /* Judge the magic first whenever it is there: a short file that is not
   * IDX at all is a format error, not a truncated IDX file. */
  if (got >= 4) {
    rc = idx_check_magic(path, hdr, ndims, err);
    if (rc != 0)
      goto out;
  }
  if (got < hdr_len) {
    rc = nn_fail(err, NN_ETRUNC,
                  "%s: truncated: an IDX %s header is %zu bytes, file has %s",
                  path, kind, hdr_len,
                  idx_found(gz, got, found, sizeof(found)));
    goto out;
  }
  rc = idx_check_dims(path, hdr, ndims, dims, &payload, err);
  if (rc != 0)
    goto out;

  /* A plain file's size is known up front: catch truncation and trailing
   * data before allocating, so a lying header costs nothing. The checks
   * after reading still apply (the file may change meanwhile, or be gzip). */
  if (gzdirect(gz) && S_ISREG(st.st_mode)) {
    uint64_t size = (uint64_t)st.st_size;
    uint64_t have = size > hdr_len ? size - hdr_len : 0;

    if (have < payload) {
      rc = nn_fail(err, NN_ETRUNC,
                    "%s: truncated: header says %zu %s bytes, file has %llu",
                    path, payload, unit, (unsigned long long)have);
      goto out;
    }
    if (have > payload) {
      rc = nn_fail(err, NN_EFORMAT,
                    "%s: %llu trailing bytes after the %zu %s bytes the "
                    "header declares",
                    path, (unsigned long long)(have - payload), payload,
                    unit);
      goto out;
    }
  }

  rc = idx_read_payload(gz, path, payload, !gzdirect(gz), &buf, &got, err);
  if (rc != 0) {
    if (rc == NN_ENOMEM)
      (void)nn_fail(err, NN_ENOMEM, "%s: out of memory for %zu %s bytes",
                    path, payload, unit);
    goto out;
  }
  if (got < payload) {
    rc = nn_fail(err, NN_ETRUNC,
                  "%s: truncated: header says %zu %s bytes, file has %s", path,
                  payload, unit, idx_found(gz, got, found, sizeof(found)));
    goto out;
  }
  /* Ask for one byte more. Any byte means the header understates the size.
   * For gzip, zlib may hand over the last pixel before it has read the
   * stream's CRC32 and length trailer; this read makes it verify them. */
  rc = idx_read_full(gz, path, &extra, 1, &got, err);
  if (rc != 0)
    goto out;
  if (got != 0) {
    rc = nn_fail(err, NN_EFORMAT,
                  "%s: trailing data after the %zu %s bytes the header "
                  "declares",
                  path, payload, unit);
    goto out;
  }
  if (idx_gz_cut(gz)) {
    rc = nn_fail(err, NN_ETRUNC,
                  "%s: truncated: the gzip stream ends before its trailer",
                  path);
    goto out;
  }

  *out = buf;
  *out_len = payload;
  buf = NULL;
  rc = 0;

out:
  free(buf);
  /* A close error after a complete, verified read loses nothing. */
  if (gz != NULL)
    (void)gzclose_r(gz); /* closes fd too */
  else if (fd >= 0)
    (void)close(fd);
  return rc;
}

/* ---------------------------------------------------------------- API */

#define HUGE_PAGE ((size_t)2 << 20)

void *nn_halloc(size_t bytes) {
  if (bytes < HUGE_PAGE) return malloc(bytes ? bytes : 1);
  if (bytes > SIZE_MAX - HUGE_PAGE) return NULL;
  const size_t cap = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  void *p = aligned_alloc(HUGE_PAGE, cap);
#ifdef MADV_HUGEPAGE
  /* Advice: where the kernel says no, the pages are simply small. */
  if (p) (void)madvise(p, cap, MADV_HUGEPAGE);
#endif
  return p;
}

int nn_idx_read_images(const char *path, uint8_t **images, uint32_t *n,
                       uint32_t *rows, uint32_t *cols, nn_err *err) {
  uint32_t dims[IDX_MAX_DIMS] = {0, 0, 0};
  uint8_t *buf = NULL;
  size_t len = 0;
  int rc;

  if (path == NULL || images == NULL || n == NULL || rows == NULL ||
      cols == NULL)
    return nn_fail(err, NN_EINVAL, "nn_idx_read_images: NULL argument");
  /* Failure leaves the outputs empty, so the caller can free *images
   * unconditionally. */
  *images = NULL;
  *n = *rows = *cols = 0;

  rc = idx_read(path, IDX_IMAGE_DIMS, dims, &buf, &len, err);
  if (rc != 0)
    return rc;
  *images = buf;
  *n = dims[0];
  *rows = dims[1];
  *cols = dims[2];
  return 0;
}

int nn_idx_read_labels(const char *path, uint8_t **labels, uint32_t *n,
                       nn_err *err) {
  uint32_t dims[IDX_MAX_DIMS] = {0, 0, 0};
  uint8_t *buf = NULL;
  size_t len = 0, i;
  int rc;

  if (path == NULL || labels == NULL || n == NULL)
    return nn_fail(err, NN_EINVAL, "nn_idx_read_labels: NULL argument");
  *labels = NULL;
  *n = 0;

  rc = idx_read(path, IDX_LABEL_DIMS, dims, &buf, &len, err);
  if (rc != 0)
    return rc;
  /* Labels index the softmax output and per-class arrays: one out of
   * range would be an out-of-bounds access later, so refuse it here. */
  for (i = 0; i < len; i++) {
    if (buf[i] >= NN_CLASSES) {
      rc = nn_fail(err, NN_EFORMAT,
                    "%s: label at index %zu is %u, must be below %u", path,
                    i, (unsigned)buf[i], (unsigned)NN_CLASSES);
      free(buf);
      return rc;
    }
  }
  *labels = buf;
  *n = dims[0];
  return 0;
}

int nn_dataset_load(nn_dataset *ds, const char *images_path,
                    const char *labels_path, nn_err *err) {
  nn_dataset tmp;
  uint32_t n_labels = 0;
  int rc;

  if (ds == NULL || images_path == NULL || labels_path == NULL)
    return nn_fail(err, NN_EINVAL, "nn_dataset_load: NULL argument");
  /* ds is overwritten, not freed: it may hold garbage. Build into tmp and
   * publish only a complete data set. */
  memset(ds, 0, sizeof(*ds));
  memset(&tmp, 0, sizeof(tmp));

  rc = nn_idx_read_images(images_path, &tmp.images, &tmp.n, &tmp.rows,
                          &tmp.cols, err);
  if (rc != 0)
    return rc;
  /* Checked before reading labels: no point reading them for unusable
   * images. */
  if (tmp.rows != NN_IMAGE_SIDE || tmp.cols != NN_IMAGE_SIDE) {
    rc = nn_fail(err, NN_EMISMATCH, "%s: images are %ux%u, expected %dx%d",
                  images_path, tmp.rows, tmp.cols, NN_IMAGE_SIDE,
                  NN_IMAGE_SIDE);
    goto out_images;
  }
  rc = nn_idx_read_labels(labels_path, &tmp.labels, &n_labels, err);
  if (rc != 0)
    goto out_images;
  if (n_labels != tmp.n) {
    rc = nn_fail(err, NN_EMISMATCH, "%s has %u images but %s has %u labels",
                  images_path, tmp.n, labels_path, n_labels);
    goto out_labels;
  }

  *ds = tmp;
  return 0;

out_labels:
  free(tmp.labels);
out_images:
  free(tmp.images);
  return rc;
}

/* Sets path to dir/name, or to dir/name.gz when only that exists. Any
 * failure to stat other than "not there" picks the plain name, so the
 * reader reports the real error (permissions, ...) against it. */
static int idx_find(const char *dir, const char *name, char *path,
                    size_t size, nn_err *err) {
  size_t dlen = strlen(dir);
  const char *sep = dir[dlen - 1] == '/' ? "" : "/";
  struct stat st;
  int len;

  len = snprintf(path, size, "%s%s%s.gz", dir, sep, name);
  if (len < 0 || (size_t)len >= size)
    return nn_fail(err, NN_EINVAL, "%s: path too long", dir);

  path[len - 3] = '\0'; /* the plain name wins when both exist */
  if (stat(path, &st) == 0 || errno != ENOENT)
    return 0;
  path[len - 3] = '.';
  if (stat(path, &st) == 0 || errno != ENOENT)
    return 0;
  path[len - 3] = '\0';
  return nn_fail(err, NN_ENOENT, "%s: neither %s nor %s.gz found there",
                  dir, name, name);
}

int nn_dataset_load_dir(nn_dataset *ds, const char *dir, nn_split split,
                        nn_err *err) {
  static const char *const names[2][2] = {
      {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
      {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"},
  };
  char images_path[IDX_PATH_MAX], labels_path[IDX_PATH_MAX];
  struct stat st;
  int rc;

  if (ds == NULL || dir == NULL || dir[0] == '\0' ||
      (split != NN_SPLIT_TRAIN && split != NN_SPLIT_TEST))
    return nn_fail(err, NN_EINVAL, "nn_dataset_load_dir: bad argument");
  memset(ds, 0, sizeof(*ds));

  /* Say plainly when the directory itself is the problem, rather than
   * reporting a missing file inside it. */
  if (stat(dir, &st) != 0) {
    if (errno == ENOENT)
      return nn_fail(err, NN_ENOENT,
                      "%s: data set directory does not exist", dir);
  } else if (!S_ISDIR(st.st_mode)) {
    return nn_fail(err, NN_EINVAL, "%s: not a directory", dir);
  }

  rc = idx_find(dir, names[split][0], images_path, sizeof(images_path), err);
  if (rc != 0)
    return rc;
  rc = idx_find(dir, names[split][1], labels_path, sizeof(labels_path), err);
  if (rc != 0)
    return rc;
  return nn_dataset_load(ds, images_path, labels_path, err);
}

int nn_dataset_count_dir(const char *dir, nn_split split, uint32_t *n, nn_err *err) {
  static const char *const names[2] = {"train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"};
  char path[IDX_PATH_MAX];
  uint8_t hdr[8];
  int rc;

  if (dir == NULL || dir[0] == '\0' || n == NULL ||
      (split != NN_SPLIT_TRAIN && split != NN_SPLIT_TEST))
    return nn_fail(err, NN_EINVAL, "nn_dataset_count_dir: bad argument");
  rc = idx_find(dir, names[split], path, sizeof(path), err);
  if (rc != 0)
    return rc;
  gzFile gz = gzopen(path, "rb");
  if (gz == NULL)
    return idx_errno_fail(err, path, "cannot open", errno);
  int got = gzread(gz, hdr, sizeof(hdr));
  gzclose(gz);
  if (got != (int)sizeof(hdr))
    return nn_fail(err, NN_ETRUNC, "%s: shorter than an IDX header", path);
  rc = idx_check_magic(path, hdr, IDX_LABEL_DIMS, err);
  if (rc != 0)
    return rc;
  *n = idx_be32(hdr + 4);
  return 0;
}

void nn_dataset_truncate(nn_dataset *ds, uint32_t n) {
  if (ds != NULL && n < ds->n)
    ds->n = n;
}

void nn_dataset_free(nn_dataset *ds) {
  if (ds == NULL)
    return;
  free(ds->images);
  free(ds->labels);
  memset(ds, 0, sizeof(*ds));
}
