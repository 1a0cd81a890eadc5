/* Matrix products through oneDNN matmul primitives.
 *
 * A primitive is compiled (JIT) for one shape, which costs tens of
 * microseconds, so each workspace keeps the last primitive of every
 * (layer, product) pair and rebuilds it only when the row count or the team
 * size changes: a training shard sees two row counts per epoch, a predictor
 * usually one. Each workspace owns its engine, stream, memory objects and
 * scratchpad, so workspaces on different threads share nothing mutable.
 *
 * oneDNN (Debian's build) parallelises with OpenMP. The team size is a
 * per-thread OpenMP setting; dnn_team() applies the workspace's choice (or
 * the process-wide nn_set_threads() value) on the calling thread before each
 * product, so a trainer's workers run single-threaded products and never
 * oversubscribe the cores. */
#include "nn_internal.h"

#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { OP_FWD, OP_DW, OP_DX, OP_PIECE, N_OPS }; /* OP_PIECE: forward, piece_rows */

typedef struct mm {
  dnnl_primitive_t prim;
  dnnl_memory_t a, b, c, bias, sp;  /* sp: scratchpad, or NULL */
  uint64_t rows;     /* the shape's variable dimension (or key); 0 = not built */
  uint32_t k;        /* the layer's inputs it was built for */
  int team;          /* OpenMP team size it was built for */
} mm;

struct nn_dnn {
  dnnl_engine_t eng;
  dnnl_stream_t stream;
  mm op[NN_MAX_LAYERS][N_OPS];
  void *scratch;     /* shared by all primitives of this workspace */
  size_t scratch_len;
  uint32_t threads;  /* 0: follow nn_set_threads() */
  uint32_t full_rows;
  uint32_t piece_rows; /* a prediction's pieces (nn_dnn_prepare_piece), or 0 */
  int any_rows;
  mm *dw_rows;       /* nn_dnn_dense_dw_rows: [layer][part], grown on demand */
  uint32_t dw_parts;
  int err;           /* first failure since nn_dnn_error() (sticky) */
  uint64_t ns;       /* time spent in the dense products (nn_dnn_gemm_ns) */
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* 0 = leave OpenMP's own default (OMP_NUM_THREADS, or one per core). */
static _Atomic int g_threads;

void nn_set_threads(int n) { atomic_store(&g_threads, n < 1 ? 1 : n); }

/* OpenMP's team size as the process started (OMP_NUM_THREADS, or one per
 * core), read before any workspace changes it: omp_set_num_threads() is per
 * calling thread, so a trainer prepared on a thread would otherwise leave
 * that thread's later products (e.g. the evaluation after each epoch) on a
 * team of one. */
static pthread_once_t g_default_once = PTHREAD_ONCE_INIT;
static int g_default_team;
static void read_default_team(void) { g_default_team = omp_get_max_threads(); }

static int dnn_team(const nn_dnn *d) {
  int want = d->threads ? (int)d->threads : atomic_load(&g_threads);
  if (want <= 0) want = g_default_team;
  if (want > 0 && omp_get_max_threads() != want) omp_set_num_threads(want);
  return omp_get_max_threads();
}

int nn_dnn_team(nn_dnn *d) { return dnn_team(d); }

int nn_dnn_create(nn_dnn **out) {
  pthread_once(&g_default_once, read_default_team);
  nn_dnn *d = calloc(1, sizeof *d);
  if (!d) return NN_ENOMEM;
  if (dnnl_engine_create(&d->eng, dnnl_cpu, 0) != dnnl_success) goto fail;
  if (dnnl_stream_create(&d->stream, d->eng, dnnl_stream_default_flags) != dnnl_success)
    goto fail;
  *out = d;
  return 0;
fail:
  nn_dnn_free(d);
  return NN_ENOMEM;
}

static void mm_clear(mm *m) {
  if (m->prim) dnnl_primitive_destroy(m->prim);
  if (m->a) dnnl_memory_destroy(m->a);
  if (m->b) dnnl_memory_destroy(m->b);
  if (m->c) dnnl_memory_destroy(m->c);
  if (m->bias) dnnl_memory_destroy(m->bias);
  if (m->sp) dnnl_memory_destroy(m->sp);
  memset(m, 0, sizeof *m);
}

void nn_dnn_free(nn_dnn *d) {
  if (!d) return;
  for (int i = 0; i < NN_MAX_LAYERS; i++)
    for (int k = 0; k < N_OPS; k++) mm_clear(&d->op[i][k]);
  for (uint32_t k = 0; d->dw_rows && k < NN_MAX_LAYERS * d->dw_parts; k++)
    mm_clear(&d->dw_rows[k]);
  free(d->dw_rows);
  if (d->stream) dnnl_stream_destroy(d->stream);
  if (d->eng) dnnl_engine_destroy(d->eng);
  free(d->scratch);
  free(d);
}

void nn_dnn_set_threads(nn_dnn *d, uint32_t threads) { d->threads = threads; }

/* A rows x cols f32 matrix; trans: stored as cols x rows, leading dim ld. */
static int md2(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, int trans, int64_t ld) {
  dnnl_dims_t dims = {rows, cols}, st = {trans ? 1 : ld, trans ? ld : 1};
  return dnnl_memory_desc_init_by_strides(md, 2, dims, dnnl_f32, st) == dnnl_success ? 0
                                                                                       : -1;
}

/* Builds C[M][N] (+)= op(A)[M][K] op(B)[K][N] (+ bias[N]); ta/tb: A (B) is
 * stored transposed; lda/ldc: leading dimensions (0: dense); accumulate:
 * C += instead of C =. */
static int mm_build(nn_dnn *d, mm *m, int64_t M, int64_t N, int64_t K, int ta, int tb,
                    int with_bias, int64_t lda, int64_t ldc, int accumulate) {
  dnnl_memory_desc_t a, b, c, bias;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  int rc = NN_ENOMEM;
  if (!lda) lda = ta ? M : K;
  if (!ldc) ldc = N;
  if (md2(&a, M, K, ta, lda) || md2(&b, K, N, tb, tb ? K : N) || md2(&c, M, N, 0, ldc))
    return NN_EINVAL;
  if (with_bias && md2(&bias, 1, N, 0, N)) return NN_EINVAL;
  dnnl_matmul_desc_t desc;
  if (dnnl_matmul_desc_init(&desc, &a, &b, with_bias ? &bias : NULL, &c) != dnnl_success)
    return NN_EINVAL;
  /* User scratchpad: the workspace's own buffer, never one the library
   * shares between threads. */
  if (dnnl_primitive_attr_create(&attr) != dnnl_success) return NN_ENOMEM;
  if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success)
    goto out;
  if (accumulate && (dnnl_post_ops_create(&po) != dnnl_success ||
                     dnnl_post_ops_append_sum(po, 1.0f) != dnnl_success ||
                     dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success))
    goto out;
  if (dnnl_primitive_desc_create(&pd, &desc, attr, d->eng, NULL) != dnnl_success) goto out;
  const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  size_t need = smd ? dnnl_memory_desc_get_size(smd) : 0;
  if (need > d->scratch_len) {
    void *p = aligned_alloc(64, (need + 63) & ~(size_t)63);
    if (!p) goto out;
    free(d->scratch);
    d->scratch = p;
    d->scratch_len = need;
  }
  if (dnnl_primitive_create(&m->prim, pd) != dnnl_success ||
      dnnl_memory_create(&m->a, &a, d->eng, DNNL_MEMORY_NONE) != dnnl_success ||
      dnnl_memory_create(&m->b, &b, d->eng, DNNL_MEMORY_NONE) != dnnl_success ||
      dnnl_memory_create(&m->c, &c, d->eng, DNNL_MEMORY_NONE) != dnnl_success ||
      (with_bias &&
       dnnl_memory_create(&m->bias, &bias, d->eng, DNNL_MEMORY_NONE) != dnnl_success) ||
      (need && dnnl_memory_create(&m->sp, smd, d->eng, DNNL_MEMORY_NONE) != dnnl_success)) {
    mm_clear(m);
    goto out;
  }
  rc = 0;
out:
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (po) dnnl_post_ops_destroy(po);
  dnnl_primitive_attr_destroy(attr);
  return rc;
}

static int mm_run(nn_dnn *d, mm *m, const float *A, const float *B, const float *bias,
                  float *C) {
  dnnl_memory_set_data_handle(m->a, (void *)A);
  dnnl_memory_set_data_handle(m->b, (void *)B);
  dnnl_memory_set_data_handle(m->c, C);
  dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, m->a}, {DNNL_ARG_WEIGHTS, m->b},
                             {DNNL_ARG_DST, m->c}};
  int n = 3;
  if (m->bias) {
    dnnl_memory_set_data_handle(m->bias, (void *)bias);
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, m->bias};
  }
  if (m->sp) {
    /* The buffer may have grown (moved) for a later primitive. */
    dnnl_memory_set_data_handle(m->sp, d->scratch);
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, m->sp};
  }
  return dnnl_primitive_execute(m->prim, d->stream, n, args) == dnnl_success ? 0 : NN_EIO;
}

static mm *mm_get(nn_dnn *d, uint32_t layer, int op, uint32_t rows, const nn_layer *l) {
  int team = dnn_team(d);
  mm *m = &d->op[layer][op];
  if (m->prim && m->rows == rows && m->team == team && m->k == l->in) return m;
  mm_clear(m);
  int64_t in = l->in, out = l->out, n = rows;
  int rc = op == OP_FWD || op == OP_PIECE ? mm_build(d, m, n, out, in, 0, 1, 1, 0, 0, 0) /* x W^T + b */
           : op == OP_DW ? mm_build(d, m, out, in, n, 1, 0, 0, 0, 0, 0) /* g^T x */
                         : mm_build(d, m, n, in, out, 0, 0, 0, 0, 0, 0); /* g W */
  if (rc) return NULL;
  m->rows = rows;
  m->team = team;
  m->k = l->in;
  return m;
}

/* nn_dnn_inject_failure: products to go until the injected failure (0:
 * none). Process-wide, so a test reaches a trainer's private workspaces. */
static _Atomic uint32_t g_inject;

static int injected(void) {
  uint32_t v = atomic_load(&g_inject);
  while (v && !atomic_compare_exchange_weak(&g_inject, &v, v - 1)) {
  }
  return v == 1;
}

/* dnnl_sgemm fails only when oneDNN cannot get memory for its own buffers.
 * A pass has no error return of its own, so the first failure is kept (the
 * product's output is then undefined) and the public call that ran the pass
 * returns it (nn_dnn_error). must() reads the `d` of the calling function,
 * which keeps the product call sites as they were. */
static void dnn_note(nn_dnn *d, int ok) {
  if (injected()) ok = 0;
  if (!ok && !d->err) d->err = NN_ENOMEM;
}
#define must(ok) dnn_note(d, (ok))

int nn_dnn_error(nn_dnn *d) {
  int rc = d->err;
  d->err = 0;
  return rc;
}

void nn_dnn_inject_failure(uint32_t nth) { atomic_store(&g_inject, nth); }

void nn_dnn_fail(nn_dnn *d, int rc) {
  if (rc && !d->err) d->err = rc;
}

/* Kernels are compiled for the workspace's full row count (what a trainer
 * shard or a predictor sees nearly always) or, with any_rows, for whatever
 * comes; other row counts, and any failure to compile, take dnnl_sgemm,
 * which needs nothing from us. */
static mm *mm_pick(nn_dnn *d, uint32_t layer, int op, uint32_t n, const nn_layer *l) {
  if (op == OP_FWD && n == d->piece_rows && n != d->full_rows) op = OP_PIECE;
  else if (!d->any_rows && n != d->full_rows) return NULL;
  return mm_get(d, layer, op, n, l);
}

static void dense_fwd(nn_dnn *d, uint32_t layer, const nn_layer *l, const float *x,
                      uint32_t n, const float *w, const float *b, float *y) {
  if (n == 1) {
    /* One row: a matrix-vector product, where dnnl_sgemm's GEMV path is
     * about twice as fast as a matmul primitive. It reads every weight
     * once, so its time is the weights' bytes: leading and trailing zero
     * inputs (an MNIST digit's empty top and bottom rows) are left out. */
    dnn_team(d);
    uint32_t lo = 0, hi = l->in;
    while (lo < hi && x[lo] == 0.f) lo++;
    while (hi > lo && x[hi - 1] == 0.f) hi--;
    memcpy(y, b, l->out * sizeof(float));
    if (hi > lo)
      must(dnnl_sgemm('N', 'N', l->out, 1, hi - lo, 1.f, w + lo, l->in, x + lo, 1, 1.f, y, 1) ==
           dnnl_success);
    return;
  }
  mm *m = mm_pick(d, layer, OP_FWD, n, l);
  if (m && !mm_run(d, m, x, w, b, y)) return;
  dnn_team(d);
  for (uint32_t r = 0; r < n; r++) memcpy(y + (size_t)r * l->out, b, l->out * sizeof(float));
  must(dnnl_sgemm('N', 'T', n, l->out, l->in, 1.f, x, l->in, w, l->in, 1.f, y, l->out) ==
       dnnl_success);
}

static void dense_fwd_var(nn_dnn *d, const nn_layer *l, const float *x, uint32_t n,
                          const float *w, const float *b, float *y) {
  dnn_team(d);
  for (uint32_t r = 0; r < n; r++) memcpy(y + (size_t)r * l->out, b, l->out * sizeof(float));
  must(dnnl_sgemm('N', 'T', n, l->out, l->in, 1.f, x, l->in, w, l->in, 1.f, y, l->out) ==
       dnnl_success);
}

static int dense_dw_rows_var(nn_dnn *d, const nn_layer *l, uint32_t o_lo, uint32_t o_hi,
                             const float *g, const float *x, uint32_t n, int accumulate,
                             float *dw) {
  if (injected()) return d->err = NN_ENOMEM;
  dnn_team(d);
  if (dnnl_sgemm('T', 'N', o_hi - o_lo, l->in, n, 1.f, g + o_lo, l->out, x, l->in,
                 accumulate ? 1.f : 0.f, dw + (size_t)o_lo * l->in, l->in) == dnnl_success)
    return 0;
  return d->err = NN_ENOMEM;
}

static void dense_dw(nn_dnn *d, uint32_t layer, const nn_layer *l, const float *g,
                     const float *x, uint32_t n, float *dw) {
  mm *m = mm_pick(d, layer, OP_DW, n, l);
  if (m && !mm_run(d, m, g, x, NULL, dw)) return;
  dnn_team(d);
  must(dnnl_sgemm('T', 'N', l->out, l->in, n, 1.f, g, l->out, x, l->in, 0.f, dw, l->in) ==
       dnnl_success);
}

static void dense_dx(nn_dnn *d, uint32_t layer, const nn_layer *l, const float *g,
                     const float *w, uint32_t n, float *dx) {
  mm *m = mm_pick(d, layer, OP_DX, n, l);
  if (m && !mm_run(d, m, g, w, NULL, dx)) return;
  dnn_team(d);
  must(dnnl_sgemm('N', 'N', n, l->in, l->out, 1.f, g, l->out, w, l->in, 0.f, dx, l->in) ==
       dnnl_success);
}

int nn_dnn_prepare(nn_dnn *d, const nn_model *m, uint32_t full_rows, int any_rows) {
  d->full_rows = full_rows;
  d->any_rows = any_rows;
  if (!m || full_rows < 2) return 0;
  for (uint32_t i = 0; i < m->n_layers; i++)
    if (m->layers[i].type == NN_LAYER_DENSE && !mm_get(d, i, OP_FWD, full_rows, &m->layers[i]))
      return NN_ENOMEM;
  return 0;
}

int nn_dnn_prepare_piece(nn_dnn *d, const nn_model *m, uint32_t rows) {
  d->piece_rows = rows;
  for (uint32_t i = 0; m && rows >= 2 && i < m->n_layers; i++)
    if (m->layers[i].type == NN_LAYER_DENSE && rows != d->full_rows &&
        !mm_get(d, i, OP_PIECE, rows, &m->layers[i]))
      return NN_ENOMEM;
  return 0;
}

static int dense_dw_rows(nn_dnn *d, uint32_t layer, uint32_t part, uint32_t n_parts,
                         const nn_layer *l, uint32_t o_lo, uint32_t o_hi, const float *g,
                         const float *x, uint32_t n, int accumulate, float *dw) {
  if (injected()) return d->err = NN_ENOMEM;
  if (n_parts > d->dw_parts) {
    mm *p = calloc((size_t)NN_MAX_LAYERS * n_parts, sizeof *p);
    if (!p) return NN_ENOMEM;
    for (uint32_t k = 0; d->dw_rows && k < NN_MAX_LAYERS * d->dw_parts; k++)
      mm_clear(&d->dw_rows[k]);
    free(d->dw_rows);
    d->dw_rows = p;
    d->dw_parts = n_parts;
  }
  int team = dnn_team(d);
  mm *m = &d->dw_rows[layer * d->dw_parts + part];
  /* The key: everything the shape depends on. o_lo only moves pointers. */
  uint64_t key = (uint64_t)n | (uint64_t)(o_hi - o_lo) << 32 | (uint64_t)!!accumulate << 63;
  if (!(m->prim && m->rows == key && m->team == team)) {
    mm_clear(m);
    int rc = mm_build(d, m, o_hi - o_lo, l->in, n, 1, 0, 0, l->out, l->in, accumulate);
    if (rc) return rc;
    m->rows = key;
    m->team = team;
  }
  return mm_run(d, m, g + o_lo, x, NULL, dw + (size_t)o_lo * l->in);
}

/* The public products, timed: nn_dnn_gemm_ns. */
void nn_dnn_dense_fwd(nn_dnn *d, uint32_t layer, const nn_layer *l, const float *x,
                      uint32_t n, const float *w, const float *b, float *y) {
  const uint64_t t0 = now_ns();
  dense_fwd(d, layer, l, x, n, w, b, y);
  d->ns += now_ns() - t0;
}

void nn_dnn_dense_fwd_var(nn_dnn *d, const nn_layer *l, const float *x, uint32_t n,
                          const float *w, const float *b, float *y) {
  const uint64_t t0 = now_ns();
  dense_fwd_var(d, l, x, n, w, b, y);
  d->ns += now_ns() - t0;
}

int nn_dnn_dense_dw_rows_var(nn_dnn *d, const nn_layer *l, uint32_t o_lo, uint32_t o_hi,
                             const float *g, const float *x, uint32_t n, int accumulate,
                             float *dw) {
  const uint64_t t0 = now_ns();
  int rc = dense_dw_rows_var(d, l, o_lo, o_hi, g, x, n, accumulate, dw);
  d->ns += now_ns() - t0;
  return rc;
}

void nn_dnn_dense_dw(nn_dnn *d, uint32_t layer, const nn_layer *l, const float *g,
                     const float *x, uint32_t n, float *dw) {
  const uint64_t t0 = now_ns();
  dense_dw(d, layer, l, g, x, n, dw);
  d->ns += now_ns() - t0;
}

void nn_dnn_dense_dx(nn_dnn *d, uint32_t layer, const nn_layer *l, const float *g,
                     const float *w, uint32_t n, float *dx) {
  const uint64_t t0 = now_ns();
  dense_dx(d, layer, l, g, w, n, dx);
  d->ns += now_ns() - t0;
}

int nn_dnn_dense_dw_rows(nn_dnn *d, uint32_t layer, uint32_t part, uint32_t n_parts,
                         const nn_layer *l, uint32_t o_lo, uint32_t o_hi, const float *g,
                         const float *x, uint32_t n, int accumulate, float *dw) {
  const uint64_t t0 = now_ns();
  int rc = dense_dw_rows(d, layer, part, n_parts, l, o_lo, o_hi, g, x, n, accumulate, dw);
  d->ns += now_ns() - t0;
  return rc;
}

uint64_t nn_dnn_gemm_ns(const nn_dnn *d) { return d->ns; }

static const char *isa_name(dnnl_cpu_isa_t isa) {
  switch ((int)isa) {
  case dnnl_cpu_isa_sse41: return "sse41";
  case dnnl_cpu_isa_avx: return "avx";
  case dnnl_cpu_isa_avx2: return "avx2";
  case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
  case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
  case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
  case dnnl_cpu_isa_avx512_core: return "avx512_core";
  case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
  case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
  case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
  default: return "unknown";
  }
}

static nn_backend_info g_info; /* written once, under g_info_once */
static pthread_once_t g_info_once = PTHREAD_ONCE_INIT;

static void backend_probe(void) {
  nn_backend_info *out = &g_info;
  const dnnl_version_t *v = dnnl_version();
  snprintf(out->library, sizeof out->library, "oneDNN %d.%d.%d", v->major, v->minor,
           v->patch);
  snprintf(out->isa, sizeof out->isa, "%s", isa_name(dnnl_get_effective_cpu_isa()));
  /* The kernel oneDNN picks for the seed network's first layer. */
  snprintf(out->kernel, sizeof out->kernel, "unknown");
  nn_dnn *d;
  if (nn_dnn_create(&d)) return;
  nn_layer l = {.type = NN_LAYER_DENSE, .in = NN_IMAGE_SIZE, .out = 256};
  mm *m = mm_get(d, 0, OP_FWD, 64, &l);
  const_dnnl_primitive_desc_t pd;
  const char *impl = NULL;
  if (m && dnnl_primitive_get_primitive_desc(m->prim, &pd) == dnnl_success &&
      dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
      impl)
    snprintf(out->kernel, sizeof out->kernel, "%s", impl);
  nn_dnn_free(d);
}

void nn_backend_info_get(nn_backend_info *out) {
  pthread_once(&g_info_once, backend_probe);
  *out = g_info;
}
