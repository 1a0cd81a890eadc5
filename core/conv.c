/* Convolution and pooling on NHWC feature maps. A convolution is im2col +
 * one matrix product through oneDNN (dnn.c): with the patch matrix
 * col[n*oh*ow][k*k*c] and weights W[filters][k*k*c], the forward pass is
 * exactly a dense layer over n*oh*ow rows, and so are its two gradients.
 * The copies here are the only loops; no hand-rolled products. */
#include "nn_internal.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nn_im2col(const float *restrict x, uint32_t n, const nn_layer *l, float *restrict col) {
  const uint32_t H = l->ishape.h, W = l->ishape.w, C = l->ishape.c;
  const uint32_t OH = l->oshape.h, OW = l->oshape.w, k = l->kernel, s = l->stride;
  const size_t K = (size_t)k * k * C, run = (size_t)C * sizeof(float);
  for (uint32_t b = 0; b < n; b++) {
    const float *xb = x + (size_t)b * H * W * C;
    for (uint32_t oy = 0; oy < OH; oy++)
      for (uint32_t ox = 0; ox < OW; ox++) {
        float *row = col + (((size_t)b * OH + oy) * OW + ox) * K;
        for (uint32_t ky = 0; ky < k; ky++) {
          int64_t iy = (int64_t)oy * s + ky - l->pad_t;
          float *dst = row + (size_t)ky * k * C;
          if (iy < 0 || iy >= H) {
            memset(dst, 0, (size_t)k * run);
            continue;
          }
          int64_t ix0 = (int64_t)ox * s - l->pad_l;
          if (ix0 >= 0 && ix0 + k <= W) {
            /* The whole kernel row is inside: one contiguous copy. */
            memcpy(dst, xb + ((size_t)iy * W + ix0) * C, (size_t)k * run);
            continue;
          }
          for (uint32_t kx = 0; kx < k; kx++) {
            int64_t ix = ix0 + kx;
            if (ix < 0 || ix >= W)
              memset(dst + (size_t)kx * C, 0, run);
            else
              memcpy(dst + (size_t)kx * C, xb + ((size_t)iy * W + ix) * C, run);
          }
        }
      }
  }
}

NN_HOT void nn_col2im(const float *restrict col, uint32_t n, const nn_layer *l,
                      float *restrict dx) {
  const uint32_t H = l->ishape.h, W = l->ishape.w, C = l->ishape.c;
  const uint32_t OH = l->oshape.h, OW = l->oshape.w, k = l->kernel, s = l->stride;
  const size_t K = (size_t)k * k * C;
  memset(dx, 0, (size_t)n * H * W * C * sizeof(float));
  for (uint32_t b = 0; b < n; b++) {
    float *xb = dx + (size_t)b * H * W * C;
    for (uint32_t oy = 0; oy < OH; oy++)
      for (uint32_t ox = 0; ox < OW; ox++) {
        const float *row = col + (((size_t)b * OH + oy) * OW + ox) * K;
        for (uint32_t ky = 0; ky < k; ky++) {
          int64_t iy = (int64_t)oy * s + ky - l->pad_t;
          if (iy < 0 || iy >= H) continue;
          for (uint32_t kx = 0; kx < k; kx++) {
            int64_t ix = (int64_t)ox * s + kx - l->pad_l;
            if (ix < 0 || ix >= W) continue;
            const float *src = row + ((size_t)ky * k + kx) * C;
            float *dst = xb + ((size_t)iy * W + ix) * C;
#pragma omp simd
            for (uint32_t c = 0; c < C; c++) dst[c] += src[c];
          }
        }
      }
  }
}

/* 2x2 windows, stride 2 (the common pooling): the window position of each
 * maximum (0..3 in window order, POOL2_NONE for a clamped window) is kept
 * instead of an index, so both passes are straight vector loops. */
#define POOL2_NONE 4u /* a flag bit: matches no position 0..3 */

/* One output position (restrict parameters: the stores alias nothing). */
static inline __attribute__((always_inline)) void
pool2_win_fwd(const float *restrict p0, const float *restrict p1, const float *restrict p2,
              const float *restrict p3, float *restrict yo, uint32_t *restrict po, uint32_t C,
              uint32_t clamp) {
  /* The first maximum in window order wins ties (strict >). Updates in
   * place, as the general kernel: this form the compiler vectorises. */
  const float *restrict p[4] = {p0, p1, p2, p3};
#pragma omp simd
  for (uint32_t c = 0; c < C; c++) {
    yo[c] = p0[c];
    po[c] = 0;
  }
  for (uint32_t k = 1; k < 4; k++) {
    const float *restrict pk = p[k];
#pragma omp simd
    for (uint32_t c = 0; c < C; c++) {
      int gt = pk[c] > yo[c];
      yo[c] = gt ? pk[c] : yo[c];
      po[c] = gt ? k : po[c];
    }
  }
  if (clamp) {
#pragma omp simd
    for (uint32_t c = 0; c < C; c++) po[c] |= clamp & (0u - (uint32_t)!(yo[c] > 0.f));
  }
}

/* The same on one block of 16 channels in vector registers (GCC vector
 * types, lowered to what the target has): the loop form above compiles to
 * masked stores behind branches, and a one-pass loop is not if-converted. */
typedef float pool_v16f __attribute__((vector_size(64), aligned(4)));
typedef int32_t pool_v16i __attribute__((vector_size(64), aligned(4)));

static inline __attribute__((always_inline)) void
pool2_win_fwd16(const float *restrict p0, const float *restrict p1, const float *restrict p2,
                const float *restrict p3, float *restrict yo, uint32_t *restrict po,
                uint32_t clamp) {
  pool_v16f m = *(const pool_v16f *)p0;
  pool_v16i q = {0}, gt;
  const float *restrict p[3] = {p1, p2, p3};
  for (int k = 0; k < 3; k++) {
    pool_v16f v = *(const pool_v16f *)p[k];
    gt = v > m;
    q = (q & ~gt) | ((k + 1) & gt);
    m = (pool_v16f)(((pool_v16i)m & ~gt) | ((pool_v16i)v & gt));
  }
  gt = m > 0.f;
  *(pool_v16f *)yo = m;
  *(pool_v16i *)po = q | ((int32_t)clamp & ~gt);
}

static inline __attribute__((always_inline)) void
pool2_win_bwd(float *restrict d0, float *restrict d1, float *restrict d2, float *restrict d3,
              const float *restrict go, const uint32_t *restrict po, uint32_t C) {
#pragma omp simd
  for (uint32_t c = 0; c < C; c++) {
    uint32_t q = po[c];
    d0[c] = q == 0 ? go[c] : 0.f;
    d1[c] = q == 1 ? go[c] : 0.f;
    d2[c] = q == 2 ? go[c] : 0.f;
    d3[c] = q == 3 ? go[c] : 0.f;
  }
}

static inline __attribute__((always_inline)) void
pool2_fwd_c(const float *restrict x, uint32_t n, const nn_layer *l, int rect, float *restrict y,
            uint32_t *restrict pos, const uint32_t C) {
  const uint32_t H = l->ishape.h, W = l->ishape.w;
  const uint32_t OH = l->oshape.h, OW = l->oshape.w;
  for (uint32_t b = 0; b < n; b++)
    for (uint32_t oy = 0; oy < OH; oy++)
      for (uint32_t ox = 0; ox < OW; ox++) {
        const float *p0 = x + (((size_t)b * H + 2 * oy) * W + 2 * ox) * C;
        const float *p2 = p0 + (size_t)W * C;
        size_t o = (((size_t)b * OH + oy) * OW + ox) * C;
        /* A clamped window (rectified input, maximum 0) gets the flag. */
        if (C == 16)
          pool2_win_fwd16(p0, p0 + C, p2, p2 + C, y + o, pos + o, rect ? POOL2_NONE : 0);
        else
          pool2_win_fwd(p0, p0 + C, p2, p2 + C, y + o, pos + o, C, rect ? POOL2_NONE : 0);
      }
}

/* The channel blocks (16 floats, 8 on AVX2) as constants: each window is
 * then a few whole-register operations instead of a loop with a runtime
 * trip count (measured: the generic form spent most of its time on loop
 * and address overhead). */
NN_HOT static void pool2_fwd(const float *restrict x, uint32_t n, const nn_layer *l, int rect,
                             float *restrict y, uint32_t *restrict pos) {
  const uint32_t C = l->ishape.c;
  if (C == 16) pool2_fwd_c(x, n, l, rect, y, pos, 16);
  else if (C == 8) pool2_fwd_c(x, n, l, rect, y, pos, 8);
  else pool2_fwd_c(x, n, l, rect, y, pos, C);
}

static inline __attribute__((always_inline)) void
pool2_bwd_c(const float *restrict g, const uint32_t *restrict pos, uint32_t n, const nn_layer *l,
            float *restrict dx, const uint32_t C) {
  const uint32_t H = l->ishape.h, W = l->ishape.w;
  const uint32_t OH = l->oshape.h, OW = l->oshape.w;
  for (uint32_t b = 0; b < n; b++) {
    float *db = dx + (size_t)b * l->in;
    for (uint32_t oy = 0; oy < OH; oy++) {
      for (uint32_t ox = 0; ox < OW; ox++) {
        float *d0 = db + ((size_t)2 * oy * W + 2 * ox) * C, *d2 = d0 + (size_t)W * C;
        size_t o = (((size_t)b * OH + oy) * OW + ox) * C;
        pool2_win_bwd(d0, d0 + C, d2, d2 + C, g + o, pos + o, C);
      }
      if (OW * 2 < W)
        for (uint32_t r = 0; r < 2; r++)
          memset(db + ((size_t)(2 * oy + r) * W + OW * 2) * C, 0, (W - OW * 2) * C * sizeof(float));
    }
    if (OH * 2 < H) memset(db + (size_t)OH * 2 * W * C, 0, (size_t)(H - OH * 2) * W * C * sizeof(float));
  }
}

NN_HOT static void pool2_bwd(const float *restrict g, const uint32_t *restrict pos, uint32_t n,
                             const nn_layer *l, float *restrict dx) {
  const uint32_t C = l->ishape.c;
  if (C == 16) pool2_bwd_c(g, pos, n, l, dx, 16);
  else if (C == 8) pool2_bwd_c(g, pos, n, l, dx, 8);
  else pool2_bwd_c(g, pos, n, l, dx, C);
}

NN_HOT void nn_maxpool_fwd(const float *restrict x, uint32_t n, const nn_layer *l, int rect,
                           float *restrict y, uint32_t *restrict idx) {
  const uint32_t H = l->ishape.h, W = l->ishape.w, C = l->ishape.c;
  const uint32_t OH = l->oshape.h, OW = l->oshape.w, k = l->kernel, s = l->stride;
  if (k == 2 && s == 2) {
    pool2_fwd(x, n, l, rect, y, idx);
    return;
  }
  for (uint32_t b = 0; b < n; b++) {
    const float *xb = x + (size_t)b * H * W * C;
    for (uint32_t oy = 0; oy < OH; oy++)
      for (uint32_t ox = 0; ox < OW; ox++) {
        size_t o = (((size_t)b * OH + oy) * OW + ox) * C;
        float *yo = y + o;
        uint32_t *io = idx + o;
        for (uint32_t c = 0; c < C; c++) {
          yo[c] = -FLT_MAX;
          io[c] = 0;
        }
        /* The first maximum in window order wins ties (strict >). */
        for (uint32_t ky = 0; ky < k; ky++)
          for (uint32_t kx = 0; kx < k; kx++) {
            uint32_t p = ((oy * s + ky) * W + ox * s + kx) * C;
            const float *xp = xb + p;
#pragma omp simd
            for (uint32_t c = 0; c < C; c++) {
              int gt = xp[c] > yo[c];
              yo[c] = gt ? xp[c] : yo[c];
              io[c] = gt ? p + c : io[c];
            }
          }
        if (rect) {
          /* A rectified window whose maximum is 0 was clamped: no gradient. */
#pragma omp simd
          for (uint32_t c = 0; c < C; c++) io[c] = yo[c] > 0.f ? io[c] : NN_POOL_NONE;
        }
      }
  }
}

NN_HOT void nn_maxpool_bwd(const float *restrict g, const uint32_t *restrict idx, uint32_t n,
                           const nn_layer *l, float *restrict dx) {
  const uint32_t H = l->ishape.h, W = l->ishape.w, C = l->ishape.c;
  const uint32_t OH = l->oshape.h, OW = l->oshape.w, k = l->kernel, s = l->stride;
  if (k == 2 && s == 2) {
    pool2_bwd(g, idx, n, l, dx);
    return;
  }
  if (k != s) {
    /* Overlapping (or gapped) windows: scatter. */
    memset(dx, 0, (size_t)n * l->in * sizeof(float));
    for (uint32_t b = 0; b < n; b++) {
      const float *gb = g + (size_t)b * l->out;
      const uint32_t *ib = idx + (size_t)b * l->out;
      float *db = dx + (size_t)b * l->in;
      for (uint32_t o = 0; o < l->out; o++)
        if (ib[o] != NN_POOL_NONE) db[ib[o]] += gb[o];
    }
    return;
  }
  /* Windows tile the input: every input value is written once, as the
   * gradient where it was the maximum and 0 elsewhere, in one streaming
   * pass (no clear, no scatter); the rows and columns past the last window
   * are zeroed. */
  for (uint32_t b = 0; b < n; b++) {
    float *db = dx + (size_t)b * l->in;
    for (uint32_t oy = 0; oy < OH; oy++) {
      for (uint32_t ky = 0; ky < k; ky++) {
        uint32_t row = (oy * s + ky) * W;
        for (uint32_t ox = 0; ox < OW; ox++) {
          size_t o = (((size_t)b * OH + oy) * OW + ox) * C;
          const float *go = g + o;
          const uint32_t *io = idx + o;
          for (uint32_t kx = 0; kx < k; kx++) {
            uint32_t p = (row + ox * s + kx) * C;
            float *dp = db + p;
#pragma omp simd
            for (uint32_t c = 0; c < C; c++) dp[c] = io[c] == p + c ? go[c] : 0.f;
          }
        }
        if (OW * s < W) memset(db + (size_t)(row + OW * s) * C, 0, (W - OW * s) * C * sizeof(float));
      }
    }
    if (OH * s < H)
      memset(db + (size_t)OH * s * W * C, 0, (size_t)(H - OH * s) * W * C * sizeof(float));
  }
}

/* ---------------------------------------------------------------- oneDNN
 * Direct convolutions through oneDNN primitives, measured against im2col +
 * GEMM on the cnn preset (docs/benchmarks.md): they never build a patch
 * matrix (9x the input for a 3x3 kernel), fuse the bias and the ReLU into
 * the forward kernel, and their weight gradient includes the bias gradient.
 * Activations stay NHWC, the layout of the rest of the core, so pooling,
 * flatten, model files and the ONNX exporter see no change; the weights are
 * reordered from our [filters][ky][kx][c] (OIHW dims, tag ohwi) into the
 * blocked layout the kernel wants (18k floats for the cnn preset: a few
 * microseconds) and gradients back. Primitives are built once per (layer,
 * pass, image count, team size) and kept in the workspace's context. */
#include <dnnl.h>

/* The flatten's two reorders (blocks to NHWC forward, back in the backward)
 * each keep their own primitive: sharing one slot rebuilt it twice a batch. */
enum { CV_FWD, CV_BWD_W, CV_BWD_D, CV_REORDER, CV_REORDER_BACK, CV_OPS };

typedef struct cv_prim {
  dnnl_primitive_t prim, reorder;  /* reorder: weights to (or grads from) the kernel */
  dnnl_memory_t src, wei, bias, dst, sp, wuser;
  float *wbuf;                     /* the kernel's layout of the weights, or NULL */
  uint64_t key;                    /* image count | relu, formats << 32; 0 = not built */
  int team;
} cv_prim;

struct nn_conv {
  nn_dnn *dnn; /* where failures are kept */
  dnnl_engine_t eng;
  dnnl_stream_t stream;
  cv_prim op[NN_MAX_LAYERS][CV_OPS];
  void *scratch; /* user scratchpad shared by this context's primitives */
  size_t scratch_len;
};

int nn_conv_create(nn_conv **out, nn_dnn *d) {
  nn_conv *c = calloc(1, sizeof *c);
  if (!c) return NN_ENOMEM;
  c->dnn = d;
  if (dnnl_engine_create(&c->eng, dnnl_cpu, 0) != dnnl_success ||
      dnnl_stream_create(&c->stream, c->eng, dnnl_stream_default_flags) != dnnl_success) {
    nn_conv_free(c);
    return NN_ENOMEM;
  }
  *out = c;
  return 0;
}

static void cv_clear(cv_prim *p) {
  if (p->prim) dnnl_primitive_destroy(p->prim);
  if (p->reorder) dnnl_primitive_destroy(p->reorder);
  dnnl_memory_t *mems[] = {&p->src, &p->wei, &p->bias, &p->dst, &p->sp, &p->wuser};
  for (size_t k = 0; k < sizeof mems / sizeof *mems; k++)
    if (*mems[k]) dnnl_memory_destroy(*mems[k]);
  free(p->wbuf);
  memset(p, 0, sizeof *p);
}

void nn_conv_free(nn_conv *c) {
  if (!c) return;
  for (int i = 0; i < NN_MAX_LAYERS; i++)
    for (int k = 0; k < CV_OPS; k++) cv_clear(&c->op[i][k]);
  if (c->stream) dnnl_stream_destroy(c->stream);
  if (c->eng) dnnl_engine_destroy(c->eng);
  free(c->scratch);
  free(c);
}

typedef struct cv_shapes {
  dnnl_memory_desc_t src, wany, wuser, bias, dst;
  dnnl_dims_t strides, pad_l, pad_r;
} cv_shapes;

static int md4(dnnl_memory_desc_t *md, int64_t a, int64_t b, int64_t h, int64_t w,
               dnnl_format_tag_t tag) {
  dnnl_dims_t d = {a, b, h, w};
  return dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, tag) == dnnl_success ? 0 : -1;
}

/* An activation's oneDNN layout: NHWC, or nChw16c blocks (blk). */
static dnnl_format_tag_t cv_tag(unsigned fmt, int blk, uint32_t c) {
  if (blk) return fmt & NN_CONV_BLK8 ? dnnl_nChw8c : dnnl_nChw16c;
  return c == 1 ? dnnl_nchw : dnnl_nhwc;
}

uint32_t nn_conv_block(void) {
  /* The AVX2 kernels work on blocks of 8 channels, AVX-512's on 16. */
  return dnnl_get_effective_cpu_isa() >= dnnl_cpu_isa_avx512_core ? 16 : 8;
}

static int cv_shapes_init(cv_shapes *s, const nn_layer *l, uint32_t n, unsigned fmt) {
  const int64_t C = l->ishape.c, F = l->oshape.c, k = l->kernel;
  dnnl_dims_t bd = {F};
  /* oneDNN checks oh == (ih - k + pad_t + pad_b) / stride + 1 with integer
   * division, so a valid stride-2 layer that drops the last row needs no
   * negative padding; "same" puts its odd pixel at the bottom/right. */
  int64_t pb = ((int64_t)l->oshape.h - 1) * l->stride + k - l->ishape.h - l->pad_t;
  int64_t pr = ((int64_t)l->oshape.w - 1) * l->stride + k - l->ishape.w - l->pad_l;
  s->strides[0] = s->strides[1] = l->stride;
  s->pad_l[0] = l->pad_t;
  s->pad_l[1] = l->pad_l;
  s->pad_r[0] = pb > 0 ? pb : 0;
  s->pad_r[1] = pr > 0 ? pr : 0;
  if (md4(&s->src, n, C, l->ishape.h, l->ishape.w, cv_tag(fmt, fmt & NN_CONV_SRC_BLK, C)) ||
      md4(&s->dst, n, F, l->oshape.h, l->oshape.w, cv_tag(fmt, fmt & NN_CONV_DST_BLK, F)) ||
      md4(&s->wany, F, C, k, k, dnnl_format_tag_any) || md4(&s->wuser, F, C, k, k, dnnl_ohwi) ||
      dnnl_memory_desc_init_by_tag(&s->bias, 1, bd, dnnl_f32, dnnl_x) != dnnl_success)
    return -1;
  return 0;
}

static dnnl_primitive_attr_t cv_attr(int relu) {
  dnnl_primitive_attr_t a = NULL;
  dnnl_post_ops_t po = NULL;
  if (dnnl_primitive_attr_create(&a) != dnnl_success) return NULL;
  /* The context's own scratchpad, never one the library shares between
   * threads. */
  if (dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user) != dnnl_success)
    goto fail;
  if (relu && (dnnl_post_ops_create(&po) != dnnl_success ||
               dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, 0.f, 0.f) !=
                   dnnl_success ||
               dnnl_primitive_attr_set_post_ops(a, po) != dnnl_success))
    goto fail;
  if (po) dnnl_post_ops_destroy(po);
  return a;
fail:
  if (po) dnnl_post_ops_destroy(po);
  dnnl_primitive_attr_destroy(a);
  return NULL;
}

static int cv_fwd_pd(nn_conv *c, const cv_shapes *s, int relu, dnnl_primitive_desc_t *pd) {
  dnnl_convolution_desc_t d;
  if (dnnl_convolution_forward_desc_init(&d, dnnl_forward_training, dnnl_convolution_direct,
                                         &s->src, &s->wany, &s->bias, &s->dst, s->strides,
                                         s->pad_l, s->pad_r) != dnnl_success)
    return NN_EINVAL;
  dnnl_primitive_attr_t a = cv_attr(relu);
  if (!a) return NN_ENOMEM;
  int rc = dnnl_primitive_desc_create(pd, &d, a, c->eng, NULL) == dnnl_success ? 0 : NN_EINVAL;
  dnnl_primitive_attr_destroy(a);
  return rc;
}

static int mem(nn_conv *c, dnnl_memory_t *m, const dnnl_memory_desc_t *md) {
  return dnnl_memory_create(m, md, c->eng, DNNL_MEMORY_NONE) == dnnl_success ? 0 : NN_ENOMEM;
}

/* Grows the context's scratchpad to what pd asks for and makes p's
 * primitive and scratchpad memory. */
static int cv_make(nn_conv *c, cv_prim *p, const_dnnl_primitive_desc_t pd) {
  const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  size_t need = smd ? dnnl_memory_desc_get_size(smd) : 0;
  if (need > c->scratch_len) {
    void *q = aligned_alloc(64, (need + 63) & ~(size_t)63);
    if (!q) return NN_ENOMEM;
    free(c->scratch);
    c->scratch = q;
    c->scratch_len = need;
  }
  if (dnnl_primitive_create(&p->prim, pd) != dnnl_success) return NN_ENOMEM;
  return need ? mem(c, &p->sp, smd) : 0;
}

/* The weights reorder between our layout and the kernel's kmd: to the
 * kernel (to_kernel) or back. Nothing when they are the same. */
static int cv_wreorder(nn_conv *c, cv_prim *p, const cv_shapes *s, const dnnl_memory_desc_t *kmd,
                       int to_kernel) {
  if (dnnl_memory_desc_equal(kmd, &s->wuser)) return mem(c, &p->wei, kmd);
  size_t len = dnnl_memory_desc_get_size(kmd);
  dnnl_primitive_desc_t rpd = NULL;
  if (!(p->wbuf = aligned_alloc(64, (len + 63) & ~(size_t)63))) return NN_ENOMEM;
  if (mem(c, &p->wei, kmd) || mem(c, &p->wuser, &s->wuser)) return NN_ENOMEM;
  dnnl_memory_set_data_handle(p->wei, p->wbuf);
  const dnnl_memory_desc_t *from = to_kernel ? &s->wuser : kmd, *to = to_kernel ? kmd : &s->wuser;
  if (dnnl_reorder_primitive_desc_create(&rpd, from, c->eng, to, c->eng, NULL) != dnnl_success)
    return NN_EINVAL;
  int rc = dnnl_primitive_create(&p->reorder, rpd) == dnnl_success ? 0 : NN_ENOMEM;
  dnnl_primitive_desc_destroy(rpd);
  return rc;
}

static int cv_build(nn_conv *c, cv_prim *p, int op, const nn_layer *l, uint32_t n, int relu,
                    unsigned fmt) {
  cv_shapes s;
  dnnl_primitive_desc_t fpd = NULL, pd = NULL;
  if (cv_shapes_init(&s, l, n, fmt)) return NN_EINVAL;
  int rc = cv_fwd_pd(c, &s, op == CV_FWD && relu, &fpd);
  if (rc) return rc;
  rc = NN_EINVAL;
  if (op == CV_FWD) {
    pd = fpd;
    fpd = NULL;
  } else {
    dnnl_convolution_desc_t d;
    dnnl_primitive_attr_t a = cv_attr(0);
    if (!a) goto out;
    dnnl_status_t st =
        op == CV_BWD_W
            ? dnnl_convolution_backward_weights_desc_init(&d, dnnl_convolution_direct, &s.src,
                                                          &s.wany, &s.bias, &s.dst, s.strides,
                                                          s.pad_l, s.pad_r)
            : dnnl_convolution_backward_data_desc_init(&d, dnnl_convolution_direct, &s.src,
                                                       &s.wany, &s.dst, s.strides, s.pad_l,
                                                       s.pad_r);
    if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &d, a, c->eng, fpd);
    dnnl_primitive_attr_destroy(a);
    if (st != dnnl_success) goto out;
  }
  const dnnl_memory_desc_t *kmd = dnnl_primitive_desc_query_md(
      pd, op == CV_BWD_W ? dnnl_query_diff_weights_md : dnnl_query_weights_md, 0);
  if ((rc = cv_make(c, p, pd)) || (rc = cv_wreorder(c, p, &s, kmd, op != CV_BWD_W)) ||
      (rc = mem(c, &p->src, &s.src)) || (rc = mem(c, &p->dst, &s.dst)) ||
      (op != CV_BWD_D && (rc = mem(c, &p->bias, &s.bias))))
    goto out;
  rc = 0;
out:
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (fpd) dnnl_primitive_desc_destroy(fpd);
  if (rc) cv_clear(p);
  return rc;
}

/* A pass has no error return: the failure (oneDNN had no memory for a
 * kernel) is kept for the public call that ran the pass. */
static int cv_run(nn_conv *c, dnnl_primitive_t prim, int n, const dnnl_exec_arg_t *a) {
  if (dnnl_primitive_execute(prim, c->stream, n, a) == dnnl_success) return 0;
  nn_dnn_fail(c->dnn, NN_ENOMEM);
  return NN_ENOMEM;
}

static cv_prim *cv_get(nn_conv *c, uint32_t layer, int op, const nn_layer *l, uint32_t n,
                       int relu, unsigned fmt, int team) {
  cv_prim *p = &c->op[layer][op];
  uint64_t key = (uint64_t)n | (uint64_t)!!relu << 32 | (uint64_t)fmt << 33;
  if (p->prim && p->key == key && p->team == team) return p;
  cv_clear(p);
  int rc = cv_build(c, p, op, l, n, relu, fmt);
  if (rc) {
    nn_dnn_fail(c->dnn, rc == NN_EINVAL ? NN_ENOMEM : rc);
    return NULL;
  }
  p->key = key;
  p->team = team;
  return p;
}

static void cv_exec(nn_conv *c, dnnl_primitive_t prim, cv_prim *p, int n, dnnl_exec_arg_t *a) {
  if (p && p->sp) {
    /* The buffer may have grown (moved) for a later primitive. */
    dnnl_memory_set_data_handle(p->sp, c->scratch);
    a[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->sp};
  }
  cv_run(c, prim, n, a);
}

/* Runs p's weights reorder between the user's w and the kernel's buffer. */
static int cv_reorder(nn_conv *c, cv_prim *p, const float *w, int to_kernel) {
  if (!p->reorder) {
    dnnl_memory_set_data_handle(p->wei, (void *)w);
    return 0;
  }
  dnnl_memory_set_data_handle(p->wuser, (void *)w);
  dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, to_kernel ? p->wuser : p->wei},
                          {DNNL_ARG_TO, to_kernel ? p->wei : p->wuser}};
  return cv_run(c, p->reorder, 2, a);
}

void nn_conv_fwd(nn_conv *c, int team, uint32_t layer, const nn_layer *l, unsigned fmt,
                 const float *x, uint32_t n, const float *w, const float *b, int relu, float *y) {
  cv_prim *p = cv_get(c, layer, CV_FWD, l, n, relu, fmt, team);
  if (!p || cv_reorder(c, p, w, 1)) return;
  dnnl_memory_set_data_handle(p->src, (void *)x);
  dnnl_memory_set_data_handle(p->bias, (void *)b);
  dnnl_memory_set_data_handle(p->dst, y);
  dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, p->src}, {DNNL_ARG_WEIGHTS, p->wei},
                          {DNNL_ARG_BIAS, p->bias}, {DNNL_ARG_DST, p->dst}};
  cv_exec(c, p->prim, p, 4, a);
}

void nn_conv_bwd_w(nn_conv *c, int team, uint32_t layer, const nn_layer *l, unsigned fmt,
                   const float *x, const float *g, uint32_t n, float *dw, float *db) {
  cv_prim *p = cv_get(c, layer, CV_BWD_W, l, n, 0, fmt, team);
  if (!p) return;
  if (!p->reorder) dnnl_memory_set_data_handle(p->wei, dw);
  dnnl_memory_set_data_handle(p->src, (void *)x);
  dnnl_memory_set_data_handle(p->dst, (void *)g);
  dnnl_memory_set_data_handle(p->bias, db);
  dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, p->src}, {DNNL_ARG_DIFF_DST, p->dst},
                          {DNNL_ARG_DIFF_WEIGHTS, p->wei}, {DNNL_ARG_DIFF_BIAS, p->bias}};
  cv_exec(c, p->prim, p, 4, a);
  if (p->reorder) cv_reorder(c, p, dw, 0);
}

void nn_conv_bwd_d(nn_conv *c, int team, uint32_t layer, const nn_layer *l, unsigned fmt,
                   const float *g, const float *w, uint32_t n, float *dx) {
  cv_prim *p = cv_get(c, layer, CV_BWD_D, l, n, 0, fmt, team);
  if (!p || cv_reorder(c, p, w, 1)) return;
  dnnl_memory_set_data_handle(p->dst, (void *)g);
  dnnl_memory_set_data_handle(p->src, dx);
  dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, p->dst}, {DNNL_ARG_WEIGHTS, p->wei},
                          {DNNL_ARG_DIFF_SRC, p->src}};
  cv_exec(c, p->prim, p, 3, a);
}

void nn_conv_reorder(nn_conv *c, int team, uint32_t layer, nn_shape sh, uint32_t n,
                     uint32_t block, int to_blocks, const float *x, float *y) {
  cv_prim *p = &c->op[layer][to_blocks ? CV_REORDER_BACK : CV_REORDER];
  uint64_t key = (uint64_t)n | (uint64_t)!!to_blocks << 32 | (uint64_t)block << 33;
  if (!(p->prim && p->key == key && p->team == team)) {
    dnnl_memory_desc_t nhwc, blk;
    dnnl_primitive_desc_t pd = NULL;
    cv_clear(p);
    int rc = md4(&nhwc, n, sh.c, sh.h, sh.w, dnnl_nhwc) || md4(&blk, n, sh.c, sh.h, sh.w, block == 8 ? dnnl_nChw8c : dnnl_nChw16c)
                 ? NN_EINVAL : 0;
    if (!rc)
      rc = dnnl_reorder_primitive_desc_create(&pd, to_blocks ? &nhwc : &blk, c->eng,
                                              to_blocks ? &blk : &nhwc, c->eng, NULL) ==
                   dnnl_success
               ? 0 : NN_EINVAL;
    if (!rc && (dnnl_primitive_create(&p->prim, pd) != dnnl_success ||
                mem(c, &p->src, to_blocks ? &nhwc : &blk) || mem(c, &p->dst, to_blocks ? &blk : &nhwc)))
      rc = NN_ENOMEM;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (rc) {
      cv_clear(p);
      nn_dnn_fail(c->dnn, NN_ENOMEM);
      return;
    }
    p->key = key;
    p->team = team;
  }
  dnnl_memory_set_data_handle(p->src, (void *)x);
  dnnl_memory_set_data_handle(p->dst, y);
  dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, p->src}, {DNNL_ARG_TO, p->dst}};
  cv_run(c, p->prim, 2, a);
}

/* The implementation a primitive runs, or "" when unknown. */
static const char *cv_impl(const cv_prim *p) {
  const_dnnl_primitive_desc_t pd;
  const char *impl = NULL;
  if (p->prim && dnnl_primitive_get_primitive_desc(p->prim, &pd) == dnnl_success &&
      dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
    return impl;
  return "";
}

int nn_conv_probe(nn_conv *c, int team, uint32_t layer, const nn_layer *l, unsigned fmt,
                  uint32_t n, int relu, int need_dx) {
  int ops[3] = {CV_FWD, CV_BWD_W, CV_BWD_D};
  for (int k = 0; k < (need_dx ? 3 : 2); k++) {
    cv_prim *p = &c->op[layer][ops[k]];
    cv_clear(p);
    int rc = cv_build(c, p, ops[k], l, n, k == 0 && relu, fmt);
    if (rc == NN_EINVAL) return 1; /* no implementation at all for this layout */
    if (rc) return rc;
    p->key = (uint64_t)n | (uint64_t)(k == 0 && relu) << 32 | (uint64_t)fmt << 33;
    p->team = team;
    if (!strncmp(cv_impl(p), "ref", 3)) return 1;
  }
  return 0;
}
