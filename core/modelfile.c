/* Model files and checkpoints (format in nn.h). Everything is serialised
 * into one buffer first, so the CRC covers exactly what is written and the
 * file is produced by a single write + fsync + rename. */
#include "nn_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define HDR_FIXED 56u   /* v1: magic .. n_layers */
#define LAYER_REC 12u
#define HDR2_FIXED 64u  /* v2: magic .. n_specs */
#define SPEC_REC 32u
#define CKPT_FIXED (4u + 6u * 4u + 4u + 8u + 4u + 8u)
#define FLAG_CKPT 1u

typedef struct { uint8_t *p; size_t off; } wbuf;

static void put_u32(wbuf *b, uint32_t v) {
  for (int i = 0; i < 4; i++) b->p[b->off++] = (uint8_t)(v >> (8 * i));
}
static void put_u64(wbuf *b, uint64_t v) {
  for (int i = 0; i < 8; i++) b->p[b->off++] = (uint8_t)(v >> (8 * i));
}
static void put_f32(wbuf *b, float f) {
  uint32_t v;
  memcpy(&v, &f, 4);
  put_u32(b, v);
}
static void put_f32s(wbuf *b, const float *f, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(b->p + b->off, f, n * 4);
  b->off += n * 4;
#else
  for (size_t i = 0; i < n; i++) put_f32(b, f[i]);
#endif
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p) {
  return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}
static float get_f32(const uint8_t *p) {
  uint32_t v = get_u32(p);
  float f;
  memcpy(&f, &v, 4);
  return f;
}
static void get_f32s(float *dst, const uint8_t *p, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(dst, p, n * 4);
#else
  for (size_t i = 0; i < n; i++) dst[i] = get_f32(p + 4 * i);
#endif
}

/* A crash at any point leaves either the old file or the new one, never a
 * mix. */
int nn_file_write_atomic(const char *path, const void *data, size_t len, nn_err *err) {
  const uint8_t *buf = data;
  if (!path || (!buf && len)) return nn_fail(err, NN_EINVAL, "file write: no path or data");
  size_t pl = strlen(path);
  char *tmp = malloc(pl + 16);
  if (!tmp) return nn_fail(err, NN_ENOMEM, "%s: out of memory", path);
  snprintf(tmp, pl + 16, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp), rc = 0;
  if (fd < 0) {
    rc = -errno;
    nn_fail(err, rc, "%s: cannot create temporary file: %s", path, nn_strerror(rc));
    free(tmp);
    return rc;
  }
  for (size_t off = 0; off < len;) {
    ssize_t w = write(fd, buf + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      rc = w < 0 ? -errno : NN_EIO;
      nn_fail(err, rc, "%s: write failed: %s", path, nn_strerror(rc));
      goto fail;
    }
    off += (size_t)w;
  }
  if (fchmod(fd, 0644) < 0 || fsync(fd) < 0) {
    rc = -errno;
    nn_fail(err, rc, "%s: fsync failed: %s", path, nn_strerror(rc));
    goto fail;
  }
  if (close(fd) < 0) {
    fd = -1;
    rc = -errno;
    nn_fail(err, rc, "%s: close failed: %s", path, nn_strerror(rc));
    goto fail;
  }
  fd = -1;
  if (rename(tmp, path) < 0) {
    rc = -errno;
    nn_fail(err, rc, "%s: rename failed: %s", path, nn_strerror(rc));
    goto fail;
  }
  /* Make the rename itself durable. */
  char *slash = strrchr(tmp, '/');
  if (slash) *slash = 0;
  int dfd = open(slash ? (slash == tmp ? "/" : tmp) : ".", O_RDONLY | O_DIRECTORY);
  if (dfd < 0 || fsync(dfd) < 0) {
    /* The new file is in place but its name may not survive a power cut:
     * the caller must not record it as saved. */
    rc = -errno;
    if (dfd >= 0) close(dfd);
    nn_fail(err, rc, "%s: fsync of the directory failed: %s", path, nn_strerror(rc));
    free(tmp);
    return rc;
  }
  close(dfd);
  free(tmp);
  return 0;
fail:
  if (fd >= 0) close(fd);
  unlink(tmp);
  free(tmp);
  return rc;
}

int nn_file_save(const nn_model *m, const nn_ckpt_info *ck, const char *path,
                 nn_err *err) {
  if (!m || !path) return nn_fail(err, NN_EINVAL, "model save: no model or path");
  size_t slots = ck ? nn_opt_slots(ck->cfg.opt.kind) : 0;
  size_t len = HDR2_FIXED + (size_t)m->n_specs * SPEC_REC + 8 + m->n_params * 4 + 4;
  if (ck) len += CKPT_FIXED + slots * m->n_params * 4;
  if (len > NN_MODEL_MAX_BYTES)
    return nn_fail(err, NN_ETOOBIG, "%s: model of %zu bytes exceeds the %u byte limit",
                   path, len, NN_MODEL_MAX_BYTES);
  wbuf b = {malloc(len), 0};
  if (!b.p) return nn_fail(err, NN_ENOMEM, "%s: out of memory", path);
  memcpy(b.p, NN_MODEL_MAGIC, 8);
  b.off = 8;
  put_u32(&b, NN_MODEL_VERSION);
  put_u32(&b, ck ? FLAG_CKPT : 0);
  memset(b.p + b.off, 0, 32);
  memcpy(b.p + b.off, m->arch, strnlen(m->arch, 31));
  b.off += 32;
  put_u32(&b, m->input.h);
  put_u32(&b, m->input.w);
  put_u32(&b, m->input.c);
  put_u32(&b, m->n_specs);
  for (uint32_t i = 0; i < m->n_specs; i++) {
    const nn_layer_spec *l = &m->specs[i];
    /* batch_norm keeps its two numbers in the record's unused slots, so
     * the format (and older files) stay as they are. */
    int bn = l->type == NN_LAYER_BATCHNORM;
    uint32_t eps_bits;
    memcpy(&eps_bits, &l->epsilon, 4);
    put_u32(&b, l->type);
    put_u32(&b, bn ? eps_bits : l->units);
    put_f32(&b, bn ? l->momentum : l->rate);
    put_u32(&b, l->filters);
    put_u32(&b, l->kernel);
    put_u32(&b, l->stride);
    put_u32(&b, l->padding);
    put_u32(&b, l->activation);
  }
  put_u64(&b, m->n_params);
  put_f32s(&b, m->params, m->n_params);
  if (ck) {
    const nn_opt_config *o = &ck->cfg.opt;
    put_u32(&b, o->kind);
    put_f32(&b, o->lr);
    put_f32(&b, o->rho);
    put_f32(&b, o->momentum);
    put_f32(&b, o->beta1);
    put_f32(&b, o->beta2);
    put_f32(&b, o->epsilon);
    put_u32(&b, ck->cfg.batch_size);
    put_u64(&b, ck->cfg.seed);
    put_u32(&b, ck->epoch);
    put_u64(&b, ck->steps);
    put_f32s(&b, ck->state, slots * m->n_params);
  }
  put_u32(&b, (uint32_t)crc32_z(0, b.p, b.off));
  int rc = nn_file_write_atomic(path, b.p, b.off, err);
  free(b.p);
  return rc;
}

int nn_model_save(const nn_model *m, const char *path, nn_err *err) {
  return nn_file_save(m, NULL, path, err);
}

int nn_checkpoint_save(nn_trainer *t, const char *path, nn_err *err) {
  if (!t) return nn_fail(err, NN_EINVAL, "checkpoint save: no trainer");
  nn_ckpt_info ck = {.cfg = *nn_trainer_config(t), .epoch = nn_trainer_epoch(t)};
  ck.state = nn_trainer_opt_state(t, &ck.steps);
  return nn_file_save(nn_trainer_model(t), &ck, path, err);
}

static int all_finite(const float *f, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(f[i])) return 0;
  return 1;
}

/* Version 1: the built layer list (softmax included). Sets *off to the
 * parameter count's offset. */
static int parse_layers_v1(nn_model *m, const uint8_t *p, size_t len, const char *arch,
                           size_t *off, const char *name, nn_err *err) {
  uint32_t n_inputs = get_u32(p + 48), n_layers = get_u32(p + 52);
  if (n_layers < 2 || n_layers > 32)
    return nn_fail(err, NN_EFORMAT, "%s: %u layers (allowed 2..32)", name, n_layers);
  *off = HDR_FIXED + (size_t)n_layers * LAYER_REC;
  if (len < *off + 8 + 4)
    return nn_fail(err, NN_ETRUNC, "%s: truncated inside the layer list", name);
  nn_layer_spec specs[32];
  memset(specs, 0, sizeof specs);
  for (uint32_t i = 0; i < n_layers; i++) {
    const uint8_t *r = p + HDR_FIXED + i * LAYER_REC;
    specs[i].type = (nn_layer_type)get_u32(r);
    specs[i].units = get_u32(r + 4);
    specs[i].rate = get_f32(r + 8);
  }
  if (nn_model_layout(m, arch, n_inputs, specs, n_layers))
    return nn_fail(err, NN_EFORMAT, "%s: invalid layer list", name);
  return 0;
}

/* Version 2: the user spec and the input shape. */
static int parse_layers_v2(nn_model *m, const uint8_t *p, size_t len, const char *arch,
                           size_t *off, const char *name, nn_err *err) {
  if (len < HDR2_FIXED + 8 + 4)
    return nn_fail(err, NN_ETRUNC, "%s: truncated inside the header", name);
  nn_shape in = {get_u32(p + 48), get_u32(p + 52), get_u32(p + 56)};
  uint32_t n = get_u32(p + 60);
  if (n < 1 || n > NN_MAX_SPECS)
    return nn_fail(err, NN_EFORMAT, "%s: %u layers (allowed 1..%u)", name, n, NN_MAX_SPECS);
  *off = HDR2_FIXED + (size_t)n * SPEC_REC;
  if (len < *off + 8 + 4)
    return nn_fail(err, NN_ETRUNC, "%s: truncated inside the layer list", name);
  nn_layer_spec specs[NN_MAX_SPECS];
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *r = p + HDR2_FIXED + i * SPEC_REC;
    specs[i] = (nn_layer_spec){.type = (nn_layer_type)get_u32(r), .units = get_u32(r + 4),
                               .rate = get_f32(r + 8), .filters = get_u32(r + 12),
                               .kernel = get_u32(r + 16), .stride = get_u32(r + 20),
                               .padding = (nn_padding)get_u32(r + 24),
                               .activation = (nn_activation)get_u32(r + 28)};
    if (specs[i].type == NN_LAYER_BATCHNORM) {
      specs[i].epsilon = get_f32(r + 4);
      specs[i].momentum = specs[i].rate;
      specs[i].units = 0;
      specs[i].rate = 0.f;
    }
  }
  nn_err e;
  if (nn_model_layout_spec(m, arch, in, specs, n, &e))
    return nn_fail(err, NN_EFORMAT, "%s: invalid layer list: %s", name, e.msg);
  return 0;
}

int nn_file_parse(nn_model **out, const void *buf, size_t len, const char *name,
                  nn_ckpt_info *ck, float **ck_state, nn_err *err) {
  const uint8_t *p = buf;
  if (!out || (!p && len)) return nn_fail(err, NN_EINVAL, "%s: no buffer", name);
  *out = NULL;
  if (ck_state) *ck_state = NULL;
  if (len < 8 || memcmp(p, NN_MODEL_MAGIC, 8) != 0)
    return nn_fail(err, NN_EFORMAT, "%s: not an mnistd model file (bad magic)", name);
  if (len > NN_MODEL_MAX_BYTES)
    return nn_fail(err, NN_ETOOBIG, "%s: %zu bytes, more than the %u byte limit", name,
                   len, NN_MODEL_MAX_BYTES);
  if (len < HDR_FIXED + 8 + 4)
    return nn_fail(err, NN_ETRUNC, "%s: truncated: %zu bytes is shorter than the header",
                   name, len);
  uint32_t version = get_u32(p + 8), flags = get_u32(p + 12);
  if (version != 1 && version != NN_MODEL_VERSION)
    return nn_fail(err, NN_EVERSION, "%s: format version %u, this build reads versions 1..%u",
                   name, version, NN_MODEL_VERSION);
  if (flags & ~FLAG_CKPT)
    return nn_fail(err, NN_EFORMAT, "%s: unknown flags 0x%x", name, flags);
  char arch[32];
  memcpy(arch, p + 16, 32);
  if (!memchr(arch, 0, 32))
    return nn_fail(err, NN_EFORMAT, "%s: architecture name is not terminated", name);
  nn_model *shape = malloc(sizeof *shape);
  if (!shape) return nn_fail(err, NN_ENOMEM, "%s: out of memory", name);
  size_t off;
  int rc = version == 1 ? parse_layers_v1(shape, p, len, arch, &off, name, err)
                        : parse_layers_v2(shape, p, len, arch, &off, name, err);
  if (rc) {
    free(shape);
    return rc;
  }
  uint64_t n_params = get_u64(p + off);
  off += 8;
  /* Bound every allocation by the file's size before making any: a layer
   * list of a few bytes may describe billions of parameters. */
  if (n_params != shape->n_params) {
    rc = nn_fail(err, NN_EMISMATCH, "%s: header says %llu parameters, layers need %zu", name,
                 (unsigned long long)n_params, shape->n_params);
    free(shape);
    return rc;
  }
  if (n_params > (len - off - 4) / 4) {
    free(shape);
    return nn_fail(err, NN_ETRUNC, "%s: truncated: %llu parameters do not fit in %zu bytes",
                   name, (unsigned long long)n_params, len);
  }
  nn_model *m = shape;
  m->params = nn_falloc(m->n_params, 0);
  if (!m->params) {
    free(m);
    return nn_fail(err, NN_ENOMEM, "%s: out of memory", name);
  }
  int is_ck = flags & FLAG_CKPT;
  /* The sizes are bounded by the layer checks, so this cannot overflow. */
  size_t need = off + m->n_params * 4 + 4;
  size_t ck_off = off + m->n_params * 4;
  uint32_t ck_kind = 0;
  if (is_ck) {
    need += CKPT_FIXED;
    if (len < ck_off + CKPT_FIXED + 4) {
      rc = nn_fail(err, NN_ETRUNC, "%s: truncated: %zu bytes, checkpoint needs more", name,
                   len);
      goto fail;
    }
    ck_kind = get_u32(p + ck_off);
    if (ck_kind > NN_OPT_ADAM) {
      rc = nn_fail(err, NN_EFORMAT, "%s: unknown optimizer %u", name, ck_kind);
      goto fail;
    }
    need += (size_t)nn_opt_slots((nn_opt_kind)ck_kind) * m->n_params * 4;
  }
  if (len < need) {
    rc = nn_fail(err, NN_ETRUNC, "%s: truncated: %zu bytes, expected %zu", name, len, need);
    goto fail;
  }
  if (len > need) {
    rc = nn_fail(err, NN_EFORMAT, "%s: %zu unexpected bytes after the data", name,
                 len - need);
    goto fail;
  }
  uint32_t want = get_u32(p + len - 4), got = (uint32_t)crc32_z(0, p, len - 4);
  if (want != got) {
    rc = nn_fail(err, NN_ECHECKSUM,
                 "%s: CRC32 mismatch (stored %08x, computed %08x): the file is corrupted",
                 name, want, got);
    goto fail;
  }
  get_f32s(m->params, p + off, m->n_params);
  if (!all_finite(m->params, m->n_params)) {
    rc = nn_fail(err, NN_EFORMAT, "%s: weights contain NaN or infinity", name);
    goto fail;
  }
  if (is_ck && ck) {
    const uint8_t *c = p + ck_off;
    memset(ck, 0, sizeof *ck);
    ck->cfg.opt.kind = (nn_opt_kind)ck_kind;
    ck->cfg.opt.lr = get_f32(c + 4);
    ck->cfg.opt.rho = get_f32(c + 8);
    ck->cfg.opt.momentum = get_f32(c + 12);
    ck->cfg.opt.beta1 = get_f32(c + 16);
    ck->cfg.opt.beta2 = get_f32(c + 20);
    ck->cfg.opt.epsilon = get_f32(c + 24);
    ck->cfg.batch_size = get_u32(c + 28);
    ck->cfg.seed = get_u64(c + 32);
    ck->epoch = get_u32(c + 40);
    ck->steps = get_u64(c + 44);
    if (ck_state) {
      size_t ns = (size_t)nn_opt_slots(ck->cfg.opt.kind) * m->n_params;
      *ck_state = malloc(ns * sizeof(float));
      if (!*ck_state) {
        rc = nn_fail(err, NN_ENOMEM, "%s: out of memory", name);
        goto fail;
      }
      get_f32s(*ck_state, c + CKPT_FIXED, ns);
    }
  } else if (ck) {
    memset(ck, 0, sizeof *ck);
    ck->epoch = UINT32_MAX; /* marks "no checkpoint section" */
  }
  *out = m;
  return 0;
fail:
  nn_model_free(m);
  return rc;
}

int nn_model_load_mem(nn_model **out, const void *buf, size_t len, nn_err *err) {
  return nn_file_parse(out, buf, len, "model", NULL, NULL, err);
}

/* Reads a whole file of at most NN_MODEL_MAX_BYTES. */
static int slurp(const char *path, uint8_t **buf, size_t *len, nn_err *err) {
  *buf = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    int rc = -errno;
    return nn_fail(err, rc, "%s: cannot open: %s", path, nn_strerror(rc));
  }
  struct stat st;
  int rc = 0;
  if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
    rc = nn_fail(err, NN_EIO, "%s: not a regular file", path);
    goto out;
  }
  if ((uint64_t)st.st_size > NN_MODEL_MAX_BYTES) {
    rc = nn_fail(err, NN_ETOOBIG, "%s: %lld bytes, more than the %u byte limit", path,
                 (long long)st.st_size, NN_MODEL_MAX_BYTES);
    goto out;
  }
  *len = (size_t)st.st_size;
  *buf = malloc(*len ? *len : 1);
  if (!*buf) {
    rc = nn_fail(err, NN_ENOMEM, "%s: out of memory", path);
    goto out;
  }
  if (fread(*buf, 1, *len, f) != *len) {
    rc = nn_fail(err, NN_EIO, "%s: read failed", path);
    free(*buf);
    *buf = NULL;
  }
out:
  fclose(f);
  return rc;
}

int nn_model_load(nn_model **out, const char *path, nn_err *err) {
  if (!out || !path) return nn_fail(err, NN_EINVAL, "model load: no path");
  *out = NULL;
  uint8_t *buf;
  size_t len = 0;
  int rc = slurp(path, &buf, &len, err);
  if (rc) return rc;
  rc = nn_file_parse(out, buf, len, path, NULL, NULL, err);
  free(buf);
  return rc;
}

int nn_checkpoint_load(nn_model **model_out, nn_trainer **trainer_out, const char *path,
                       nn_err *err) {
  if (!model_out || !trainer_out || !path)
    return nn_fail(err, NN_EINVAL, "checkpoint load: bad arguments");
  *model_out = NULL;
  *trainer_out = NULL;
  uint8_t *buf;
  size_t len = 0;
  int rc = slurp(path, &buf, &len, err);
  if (rc) return rc;
  nn_model *m = NULL;
  nn_trainer *t = NULL;
  nn_ckpt_info ck;
  float *state = NULL;
  rc = nn_file_parse(&m, buf, len, path, &ck, &state, err);
  free(buf);
  if (rc) return rc;
  if (!state) {
    rc = nn_fail(err, NN_EFORMAT, "%s: a model file, not a checkpoint (no optimizer state)",
                 path);
    goto fail;
  }
  rc = nn_trainer_create(&t, m, &ck.cfg);
  if (rc) {
    nn_fail(err, rc, "%s: checkpoint has an invalid training configuration", path);
    goto fail;
  }
  uint64_t steps;
  memcpy(nn_trainer_opt_state(t, &steps), state,
         (size_t)nn_opt_slots(ck.cfg.opt.kind) * m->n_params * sizeof(float));
  nn_trainer_restore(t, ck.epoch, ck.steps);
  free(state);
  *model_out = m;
  *trainer_out = t;
  return 0;
fail:
  free(state);
  nn_model_free(m);
  return rc;
}
