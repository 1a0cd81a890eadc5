/* Sequential models: construction, Keras initialisation, workspaces and the
 * forward/backward passes. Matrix products go through oneDNN (dnn.c); an
 * activation and the dropout after it run as one fused kernel (layers.c). */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 64
/* A model file or checkpoint may describe a network whose scratch memory no
 * machine has: refuse instead of asking the allocator. The presets at the
 * largest batch the CLI accepts (65536) need about 1.3 GiB. */
#define NN_WORKSPACE_MAX_BYTES ((size_t)2 << 30)

static size_t round_up(size_t n) { return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1); }

int nn_model_layout(nn_model *m, const char *arch, uint32_t n_inputs,
                    const nn_layer_spec *specs, uint32_t n_specs) {
  /* The old form: a built list ending in DENSE(classes) SOFTMAX. */
  if (!m || !specs || n_specs < 2 || n_specs > NN_MAX_SPECS + 1 || n_inputs == 0 ||
      n_inputs > NN_MAX_WIDTH)
    return NN_EINVAL;
  if (specs[n_specs - 1].type != NN_LAYER_SOFTMAX) return NN_EINVAL;
  nn_shape in = n_inputs == NN_IMAGE_SIZE ? NN_INPUT_MNIST : (nn_shape){1, 1, n_inputs};
  return nn_model_layout_spec(m, arch, in, specs, n_specs - 1, NULL) ? NN_EINVAL : 0;
}

static int model_alloc(nn_model **out, nn_model *m, int rc) {
  if (rc) {
    free(m);
    return rc;
  }
  m->params = nn_falloc(m->n_params, 1);
  if (!m->params) {
    free(m);
    return NN_ENOMEM;
  }
  *out = m;
  return 0;
}

int nn_model_create(nn_model **out, const char *arch, uint32_t n_inputs,
                    const nn_layer_spec *specs, uint32_t n_specs) {
  if (!out) return NN_EINVAL;
  *out = NULL;
  nn_model *m = malloc(sizeof *m);
  if (!m) return NN_ENOMEM;
  return model_alloc(out, m, nn_model_layout(m, arch, n_inputs, specs, n_specs));
}

int nn_model_create_spec(nn_model **out, const char *arch, nn_shape input,
                         const nn_layer_spec *specs, uint32_t n, nn_err *err) {
  if (!out) return nn_fail(err, NN_EINVAL, "no output");
  *out = NULL;
  nn_model *m = malloc(sizeof *m);
  if (!m) return nn_fail(err, NN_ENOMEM, "out of memory");
  int rc = model_alloc(out, m, nn_model_layout_spec(m, arch, input, specs, n, err));
  if (rc == NN_ENOMEM) nn_fail(err, rc, "out of memory for %s", arch ? arch : "the model");
  return rc;
}

int nn_model_create_preset(nn_model **out, const char *arch) {
  const nn_layer_spec *s;
  uint32_t n;
  if (!out || !arch) return NN_EINVAL;
  *out = NULL;
  if (nn_preset_spec(arch, &s, &n)) return NN_EINVAL;
  return nn_model_create_spec(out, arch, NN_INPUT_MNIST, s, n, NULL);
}

uint32_t nn_model_classes(const nn_model *m) {
  return m->layers[m->n_layers - 2].out;
}

int nn_model_create_preset_classes(nn_model **out, const char *arch, uint32_t classes) {
  const nn_layer_spec *s;
  uint32_t n;
  nn_layer_spec spec[NN_MAX_SPECS];
  if (!out || !arch) return NN_EINVAL;
  *out = NULL;
  if (nn_preset_spec(arch, &s, &n) || n > NN_MAX_SPECS) return NN_EINVAL;
  memcpy(spec, s, n * sizeof *s);
  spec[n - 1].units = classes; /* the last layer: one unit per class */
  return nn_model_create_spec(out, arch, NN_INPUT_MNIST, spec, n, NULL);
}

void nn_model_init(nn_model *m, uint64_t seed) {
  nn_rng rng;
  nn_rng_seed(&rng, seed);
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    if (l->type == NN_LAYER_BATCHNORM) {
      /* gamma 1, beta 0, moving mean 0, moving variance 1 (Keras). */
      float *p = m->params + l->w_off;
      for (uint32_t k = 0; k < 4 * l->ishape.c; k++) p[k] = k / l->ishape.c % 3 == 0;
      continue;
    }
    if (l->type != NN_LAYER_DENSE && l->type != NN_LAYER_CONV2D) continue;
    nn_layer d = l->type == NN_LAYER_CONV2D ? nn_conv_as_dense(l) : *l;
    float fan_in = (float)d.in, fan_out = (float)d.out;
    if (l->type == NN_LAYER_CONV2D) fan_out *= (float)(l->kernel * l->kernel);
    float limit = sqrtf(6.0f / (fan_in + fan_out));
    float *w = m->params + l->w_off;
    for (size_t k = 0; k < (size_t)d.in * d.out; k++)
      w[k] = (2.0f * nn_rng_uniform(&rng) - 1.0f) * limit;
    memset(m->params + l->b_off, 0, d.out * sizeof(float));
  }
}

int nn_model_clone(nn_model **out, const nn_model *src) {
  if (!out || !src) return NN_EINVAL;
  nn_model *m = malloc(sizeof *m);
  if (!m) return NN_ENOMEM;
  *m = *src;
  m->params = nn_falloc(src->n_params, 0);
  if (!m->params) {
    free(m);
    return NN_ENOMEM;
  }
  memcpy(m->params, src->params, src->n_params * sizeof(float));
  *out = m;
  return 0;
}

void nn_model_free(nn_model *m) {
  if (!m) return;
  free(m->params);
  free(m);
}

/* ---------------------------------------------------------------- workspace */

/* Whether convolution i writes oneDNN's channel blocks (nChw16c), the layout its
 * kernels are fastest on: when its channels come in whole blocks and
 * everything up to the next convolution or flatten works on any layout
 * (ReLU, pooling); the flatten reorders to NHWC (and its gradient back). */
static int conv_blocked(const nn_model *m, const nn_workspace *ws, uint32_t i) {
  if (m->layers[i].oshape.c % ws->cblock || ws->gemm[i] || ws->nhwc[i]) return 0;
  for (uint32_t j = i + 1; j < m->n_layers; j++) {
    nn_layer_type t = m->layers[j].type;
    if (t == NN_LAYER_CONV2D) return !ws->gemm[j] && !ws->nhwc[j];
    if (t == NN_LAYER_FLATTEN) return 1;
    if (t != NN_LAYER_RELU && t != NN_LAYER_MAXPOOL && t != NN_LAYER_BATCHNORM) return 0;
  }
  return 0;
}

/* A pooling on blocks of B channels is the same pooling on n * c/B maps of
 * B channels. */
static nn_layer pool_blocks(const nn_layer *l, uint32_t B, uint32_t *n) {
  nn_layer p = *l;
  *n *= l->ishape.c / B;
  p.ishape.c = p.oshape.c = B;
  p.in = l->in / (l->ishape.c / B);
  p.out = l->out / (l->ishape.c / B);
  return p;
}

/* Images per piece when a convolution's blocked output goes through a ReLU
 * into a pooling: pooling each piece right after its convolution reads it
 * from L2 instead of memory (the first convolution writes 5.5 MB per 64
 * images). 0 when the batch runs whole. */
#define CONV_POOL_CHUNK 8u
static uint32_t conv_pool_chunk(const nn_model *m, const nn_workspace *ws, uint32_t i,
                                uint32_t n) {
  if (i + 2 >= m->n_layers || n <= CONV_POOL_CHUNK || n % CONV_POOL_CHUNK) return 0;
  const nn_layer *c = &m->layers[i];
  if (c->type != NN_LAYER_CONV2D || ws->gemm[i] || !ws->blk[i] ||
      m->layers[i + 1].type != NN_LAYER_RELU || m->layers[i + 2].type != NN_LAYER_MAXPOOL)
    return 0;
  return CONV_POOL_CHUNK;
}

static unsigned conv_fmt(const nn_workspace *ws, uint32_t i) {
  return (i > 0 && ws->blk[i - 1] ? NN_CONV_SRC_BLK : 0) | (ws->blk[i] ? NN_CONV_DST_BLK : 0) |
         (ws->cblock == 8 ? NN_CONV_BLK8 : 0);
}

/* Each activation's layout (ws->blk) from the convolutions' kinds. */
static void conv_layouts(const nn_model *m, nn_workspace *ws) {
  uint8_t blk = 0;
  for (uint32_t i = 0; i < m->n_layers; i++) {
    if (m->layers[i].type == NN_LAYER_CONV2D) blk = (uint8_t)conv_blocked(m, ws, i);
    if (m->layers[i].type == NN_LAYER_FLATTEN) blk = 0;
    ws->blk[i] = blk;
  }
}

/* Picks each convolution's kind: oneDNN's direct kernels on channel
 * blocks, else on NHWC, where it has an optimised kernel for the layer
 * (they are built now), else im2col + GEMM: its reference code is many
 * times slower. Each refusal changes a layout, so the layers are probed
 * again until all agree (at most twice per convolution). */
static int conv_plan(const nn_model *m, nn_workspace *ws) {
  int convs = 0;
  for (uint32_t i = 0; i < m->n_layers; i++) convs |= m->layers[i].type == NN_LAYER_CONV2D;
  if (!convs) return 0;
  int rc = nn_conv_create(&ws->conv, ws->dnn);
  if (rc) return rc;
  ws->cblock = nn_conv_block();
  int team = nn_dnn_team(ws->dnn), changed = 1;
  while (changed) {
    changed = 0;
    conv_layouts(m, ws);
    for (uint32_t i = 0; i < m->n_layers && !changed; i++) {
      const nn_layer *l = &m->layers[i];
      if (l->type != NN_LAYER_CONV2D || ws->gemm[i]) continue;
      int relu = i + 1 < m->n_layers && m->layers[i + 1].type == NN_LAYER_RELU;
      rc = nn_conv_probe(ws->conv, team, i, l, conv_fmt(ws, i), ws->max_batch, relu, i > 0);
      if (rc < 0) return rc;
      if (rc == 0) continue;
      /* Blocks around this layer (its own, or its input's) first go. */
      changed = 1;
      if (!ws->nhwc[i]) ws->nhwc[i] = 1;
      else ws->gemm[i] = 1;
    }
  }
  return 0;
}

/* A batch prediction runs in pieces of at most PREDICT_PIECE rows, all of
 * a piece's layers before the next piece, each into the start of its
 * layer's buffer: a piece's activations stay in L2 between the layers
 * instead of a whole batch's going through memory at every layer. The
 * pieces are of equal size where the batch allows, so that one set of
 * kernels serves them (a smaller last piece takes dnnl_sgemm). Measured
 * for batches of 1000, one thread: pieces of 250 and 500 alike and best,
 * 128 and 168 no better than the whole batch (docs/benchmarks.md). */
#define PREDICT_PIECE 256

/* Leaving a batch's all-zero inputs out of the first product (see
 * compact_inputs) packs that layer's kept weights, 0.3-0.6 MB, once per
 * call: it pays from 64 images on. Measured per call, one thread, best of
 * 5 x 300 calls, with against without (AVX-512 packing): 128 images
 * 549-571 vs 608-624 us, 64 images 306-310 vs 320-330 us, 32 even, 16
 * 124-129 vs 113-115 us (with a memcpy per run, before: 64 images even,
 * 2 images 51-72 vs 27-33 us). */
#define COMPACT_MIN_ROWS 64

/* Pieces need layers that treat every row on its own: dense networks. */
static int piecewise(const nn_model *m) {
  for (uint32_t i = 0; i < m->n_layers; i++)
    switch (m->layers[i].type) {
    case NN_LAYER_DENSE: case NN_LAYER_ANTIRECT: case NN_LAYER_RELU: case NN_LAYER_DROPOUT:
    case NN_LAYER_SOFTMAX:
      break;
    default:
      return 0;
    }
  return 1;
}

/* Rows per piece of a prediction of n rows (n: no pieces). */
static uint32_t piece_rows(const nn_model *m, uint32_t n) {
  if (n <= PREDICT_PIECE || !piecewise(m)) return n;
  uint32_t k = (n + PREDICT_PIECE - 1) / PREDICT_PIECE;
  return (n + k - 1) / k;
}

int nn_workspace_create(nn_workspace **out, const nn_model *m, uint32_t max_batch) {
  if (!out || !m || max_batch == 0 || max_batch > (1u << 20)) return NN_EINVAL;
  *out = NULL;
  nn_workspace *ws = calloc(1, sizeof *ws);
  if (!ws) return NN_ENOMEM;
  ws->max_batch = max_batch;
  ws->n_layers = m->n_layers;

  int rc = nn_dnn_create(&ws->dnn);
  if (!rc) rc = nn_dnn_prepare(ws->dnn, m, max_batch, 0);
  const nn_layer *l0 = &m->layers[0];
  if (!rc && max_batch >= COMPACT_MIN_ROWS && l0->type == NN_LAYER_DENSE && l0->in == m->n_inputs &&
      m->n_inputs == NN_IMAGE_SIZE) {
    /* compact_inputs' buffers: runs and flags, packed weights. */
    ws->cols = malloc(sizeof *ws->cols);
    ws->used = malloc(m->n_inputs);
    ws->w0 = nn_falloc((size_t)m->n_inputs * l0->out, 0);
    if (!ws->cols || !ws->used || !ws->w0) rc = NN_ENOMEM;
  }
  if (!rc && piece_rows(m, max_batch) < max_batch) {
    ws->dnn_piece = piece_rows(m, max_batch);
    rc = nn_dnn_prepare_piece(ws->dnn, m, ws->dnn_piece);
  }
  if (!rc) rc = conv_plan(m, ws);
  if (rc) {
    nn_workspace_free(ws);
    return rc;
  }

  /* First pass sizes the single block, second pass carves it. */
  size_t B = max_batch, off[2 + 4 * NN_MAX_LAYERS], total = 0, k = 0, dcol = 0, bnc = 0;
  off[k++] = total; total += round_up(B * m->n_inputs * sizeof(float));
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    off[k++] = total; total += round_up(B * l->out * sizeof(float));
    if (l->type == NN_LAYER_DENSE) {
      off[k++] = total; total += round_up(B * l->out * sizeof(float));
    } else if (l->type == NN_LAYER_ANTIRECT) {
      off[k++] = total; total += round_up(B * l->in * sizeof(float));
      off[k++] = total; total += round_up(B * l->ishape.h * l->ishape.w * sizeof(float));
    } else if (l->type == NN_LAYER_MAXPOOL) {
      off[k++] = total; total += round_up(B * l->out * sizeof(uint32_t));
    } else if (l->type == NN_LAYER_BATCHNORM) {
      off[k++] = total; total += round_up(3 * (size_t)l->ishape.c * sizeof(float));
      if (l->ishape.c > bnc) bnc = l->ishape.c;
    } else if (l->type == NN_LAYER_CONV2D && ws->gemm[i]) {
      size_t c = B * l->oshape.h * l->oshape.w * l->kernel * l->kernel * l->ishape.c;
      off[k++] = total; total += round_up(c * sizeof(float));
      if (i > 0 && c > dcol) dcol = c;
    }
  }
  size_t gsz = round_up(B * m->max_width * sizeof(float));
  off[k] = total; /* dcol */
  total += round_up(dcol * sizeof(float));
  size_t bn_off = total;
  total += bnc ? round_up(nn_bn_scratch_bytes((uint32_t)bnc)) : 0;
  if (total + 2 * gsz > NN_WORKSPACE_MAX_BYTES) {
    nn_workspace_free(ws);
    return NN_ETOOBIG;
  }
  ws->block = aligned_alloc(ALIGN, total + 2 * gsz);
  if (!ws->block) {
    nn_workspace_free(ws);
    return NN_ENOMEM;
  }
  char *base = ws->block;
  k = 0;
  ws->x = (float *)(base + off[k++]);
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    ws->act[i] = (float *)(base + off[k++]);
    if (l->type == NN_LAYER_DENSE) {
      ws->delta[i] = (float *)(base + off[k++]);
    } else if (l->type == NN_LAYER_ANTIRECT) {
      ws->anti_y[i] = (float *)(base + off[k++]);
      ws->anti_inv[i] = (float *)(base + off[k++]);
    } else if (l->type == NN_LAYER_MAXPOOL) {
      ws->pool_idx[i] = (uint32_t *)(base + off[k++]);
    } else if (l->type == NN_LAYER_BATCHNORM) {
      ws->bn_stat[i] = (float *)(base + off[k++]);
    } else if (l->type == NN_LAYER_CONV2D && ws->gemm[i]) {
      ws->col[i] = (float *)(base + off[k++]);
    }
  }
  ws->dcol = dcol ? (float *)(base + off[k]) : NULL;
  ws->bn_acc = bnc ? (double *)(base + bn_off) : NULL;
  ws->g[0] = (float *)(base + total);
  ws->g[1] = (float *)(base + total + gsz);
  *out = ws;
  return 0;
}

void nn_workspace_free(nn_workspace *ws) {
  if (!ws) return;
  free(ws->w0);
  free(ws->cols);
  free(ws->used);
  free(ws->wt_block);
  nn_conv_free(ws->conv);
  nn_dnn_free(ws->dnn);
  free(ws->block);
  free(ws);
}

/* ---------------------------------------------------------------- passes */

/* The dropout of layer i for a training pass, drawing its key from rng
 * (one draw per dropout layer and pass, in layer order). */
static nn_drop drop_draw(const nn_layer *l, nn_workspace *ws, uint32_t i, nn_rng *rng) {
  ws->drop_key[i] = (uint32_t)nn_rng_next(rng);
  return (nn_drop){.key = ws->drop_key[i],
                   .thr = (uint32_t)((double)l->rate * 4294967296.0),
                   .scale = 1.0f / (1.0f - l->rate)};
}

/* The dropout replayed by the backward pass: the forward pass's key. */
static nn_drop drop_replay(const nn_layer *l, const nn_workspace *ws, uint32_t i) {
  return (nn_drop){.key = ws->drop_key[i],
                   .thr = (uint32_t)((double)l->rate * 4294967296.0),
                   .scale = 1.0f / (1.0f - l->rate)};
}

static int drop_active(const nn_layer *l, int training) {
  return l->type == NN_LAYER_DROPOUT && training == NN_PASS_TRAIN && l->rate > 0.f;
}

/* The convolution at i - 2 (ReLU fused) and the pooling at i, piece by piece.
 * per: the pooling's block rows per image. Every piece's convolution output
 * goes to the start of its buffer: only the pooling reads it (the ReLU's
 * backward is folded into the pooling's), and one piece-sized buffer stays
 * in L2, where fresh memory per piece cost the convolution a write miss per
 * line (measured: the first convolution took 3x its time on a warm
 * buffer). The convolution's output then holds the last piece only. */
static void conv_pool_fwd(const nn_model *m, nn_workspace *ws, uint32_t i, uint32_t n,
                          uint32_t ch, nn_layer pl, uint32_t per) {
  const uint32_t ci = i - 2;
  const nn_layer *c = &m->layers[ci], *l = &m->layers[i];
  const float *x = ci > 0 ? ws->cur[ci - 1] : ws->x;
  for (uint32_t b = 0; b < n; b += ch) {
    float *y = ws->act[ci];
    nn_conv_fwd(ws->conv, nn_dnn_team(ws->dnn), ci, c, conv_fmt(ws, ci), x + (size_t)b * c->in,
                ch, m->params + c->w_off, m->params + c->b_off, 1, y);
    nn_maxpool_fwd(y, ch * per, &pl, 1, ws->act[i] + (size_t)b * l->out,
                   ws->pool_idx[i] + (size_t)b * l->out);
  }
}

/* The backward pass of the pooling at 2 and the first convolution's
 * weights, piece by piece, so the convolution reads each piece's gradient
 * from L2. The pieces' weight gradients are summed in order (deterministic);
 * the first convolution's forward output, which nothing reads any more (its
 * ReLU is folded into the pooling), holds each later piece's. Each piece's
 * input gradient goes to the start of dx, as in conv_pool_fwd: only the
 * piece's backward-weights reads it. */
static int conv0_dw_fits(const nn_model *m, uint32_t n) {
  const nn_layer *c = &m->layers[0];
  return (size_t)c->oshape.c * (c->kernel * c->kernel * c->ishape.c + 1) <= (size_t)n * c->out;
}

static void conv_pool_bwd0(const nn_model *m, nn_workspace *ws, uint32_t n, uint32_t ch,
                           nn_layer pl, uint32_t per, const float *g, float *dx, float *grad) {
  const nn_layer *c = &m->layers[0], *l = &m->layers[2];
  const size_t nw = (size_t)c->oshape.c * c->kernel * c->kernel * c->ishape.c, nb = c->oshape.c;
  float *dw = grad + c->w_off, *db = grad + c->b_off, *tw = ws->act[0], *tb = tw + nw;
  for (uint32_t b = 0; b < n; b += ch) {
    float *d = dx;
    nn_maxpool_bwd(g + (size_t)b * l->out, ws->pool_idx[2] + (size_t)b * l->out, ch * per, &pl,
                   d);
    nn_conv_bwd_w(ws->conv, nn_dnn_team(ws->dnn), 0, c, conv_fmt(ws, 0),
                  ws->x + (size_t)b * c->in, d, ch, b ? tw : dw, b ? tb : db);
    if (!b) continue;
    for (size_t k = 0; k < nw; k++) dw[k] += tw[k];
    for (size_t k = 0; k < nb; k++) db[k] += tb[k];
  }
}

const float *nn_forward(const nn_model *m, nn_workspace *ws, uint32_t n,
                        int training, nn_rng *rng) {
  const float *in = ws->x;
  int rectified = 0; /* the layer before ran a ReLU inside its kernel */
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    float *out = ws->act[i];
    int blk = i > 0 && ws->blk[i - 1]; /* `in` is in channel blocks */
    ws->fused[i] = 0;
    switch (l->type) {
    case NN_LAYER_DENSE:
      if (i == 0 && ws->k0) {
        nn_layer c = *l;
        c.in = ws->k0;
        /* A prediction's k0 is the same for the batch's pieces, a trainer's
         * changes every step: no kernel compiled for it. */
        if (ws->predicting)
          nn_dnn_dense_fwd(ws->dnn, i, &c, in, n, ws->w0k, m->params + l->b_off, out);
        else
          nn_dnn_dense_fwd_var(ws->dnn, &c, in, n, ws->w0k, m->params + l->b_off, out);
      } else if (n == 1 && ws->pinned == m && ws->wt[i])
        nn_k_sparse_row(out, in, ws->wt[i], m->params + l->b_off, l->in, l->out);
      else
        nn_dnn_dense_fwd(ws->dnn, i, l, in, n, m->params + l->w_off, m->params + l->b_off,
                         out);
      break;
    case NN_LAYER_ANTIRECT:
    case NN_LAYER_RELU: {
      if (rectified && !(i + 1 < m->n_layers && drop_active(&m->layers[i + 1], training))) {
        /* Done by the convolution: its output is this layer's. The
         * backward pass reads it as the ReLU's input, which gives the
         * same mask (x > 0 exactly where relu(x) > 0). */
        rectified = 0;
        ws->fused[i] = 2;
        ws->cur[i] = in;
        continue;
      }
      rectified = 0;
      /* An active dropout right after runs inside this kernel and writes the
       * dropout layer's buffer; this layer's own output never exists. */
      nn_drop dr = {0, 0, 1.0f};
      const uint32_t a = i;
      if (i + 1 < m->n_layers && drop_active(&m->layers[i + 1], training)) {
        dr = drop_draw(&m->layers[i + 1], ws, i + 1, rng);
        ws->cur[a] = NULL;
        ws->fused[++i] = 1; /* from here on, i is the dropout layer */
        out = ws->act[i];
      }
      if (l->type == NN_LAYER_ANTIRECT && ws->predicting && !dr.thr)
        nn_k_antirect_infer(in, n * l->ishape.h * l->ishape.w, l->ishape.c, out);
      else if (l->type == NN_LAYER_ANTIRECT)
        /* Per position across channels; a vector is one position. */
        nn_k_antirect_fwd(in, n * l->ishape.h * l->ishape.w, l->ishape.c, ws->anti_y[a],
                          ws->anti_inv[a], out, dr);
      else
        nn_k_relu_drop_fwd(out, in, n, l->in, dr);
      break;
    }
    case NN_LAYER_CONV2D:
      if (ws->gemm[i]) {
        nn_layer d = nn_conv_as_dense(l);
        nn_im2col(in, n, l, ws->col[i]);
        nn_dnn_dense_fwd(ws->dnn, i, &d, ws->col[i], n * l->oshape.h * l->oshape.w,
                         m->params + l->w_off, m->params + l->b_off, out);
        break;
      }
      /* A ReLU right after runs inside the kernel (a post-op). */
      rectified = i + 1 < m->n_layers && m->layers[i + 1].type == NN_LAYER_RELU;
      if (rectified && conv_pool_chunk(m, ws, i, n)) {
        /* Run by the pooling above, a few images at a time. */
        ws->cur[i] = out;
        in = out;
        continue;
      }
      nn_conv_fwd(ws->conv, nn_dnn_team(ws->dnn), i, l, conv_fmt(ws, i), in, n,
                  m->params + l->w_off, m->params + l->b_off, rectified, out);
      ws->cur[i] = out;
      in = out;
      continue;
    case NN_LAYER_MAXPOOL: {
      /* A ReLU the convolution ran is undone here in the backward pass. */
      int rect = i > 0 && m->layers[i - 1].type == NN_LAYER_RELU && ws->fused[i - 1] == 2;
      uint32_t pn = n;
      nn_layer pl = blk ? pool_blocks(l, ws->cblock, &pn) : *l;
      uint32_t ch = rect ? conv_pool_chunk(m, ws, i - 2, n) : 0;
      if (ch) {
        conv_pool_fwd(m, ws, i, n, ch, pl, pn / n);
        break;
      }
      nn_maxpool_fwd(in, pn, &pl, rect, out, ws->pool_idx[i]);
      break;
    }
    case NN_LAYER_FLATTEN:
      if (blk) {
        nn_conv_reorder(ws->conv, nn_dnn_team(ws->dnn), i, l->ishape, n, ws->cblock, 0, in,
                        out);
        break;
      }
      ws->cur[i] = in; /* NHWC is already the flattened order */
      continue;
    case NN_LAYER_DROPOUT:
      if (!drop_active(l, training)) {
        /* Identity at inference: pass the input through without a copy. */
        ws->cur[i] = in;
        continue;
      }
      /* Inverted dropout: keep with probability 1-rate, scale by 1/(1-rate)
       * so inference needs no rescaling. */
      nn_k_dropout(out, in, (size_t)n * l->out, drop_draw(l, ws, i, rng));
      break;
    case NN_LAYER_BATCHNORM:
      nn_bn_fwd(l, m->params + l->w_off, in, n, blk ? ws->cblock : 0, training != 0, ws->sync,
                ws->bn_acc, ws->bn_stat[i], out);
      break;
    case NN_LAYER_SOFTMAX:
      nn_softmax_xent(in, NULL, n, l->in, out, NULL, NULL);
      break;
    }
    ws->cur[i] = out;
    in = out;
  }
  return in;
}

const float *nn_logits(const nn_model *m, const nn_workspace *ws) {
  return ws->cur[m->n_layers - 2];
}

void nn_backward(const nn_model *m, nn_workspace *ws, uint32_t n, const float *dz,
                 float *grad, int training, int defer_dw) {
  const float *g = dz;
  int pp = 0, db_done = 0; /* db_done: the layer above summed this bias gradient */
  /* The last layer is the softmax, whose gradient dz already includes. */
  for (int i = (int)m->n_layers - 2; i >= 0; i--) {
    const nn_layer *l = &m->layers[i];
    const float *in = i > 0 ? ws->cur[i - 1] : ws->x;
    /* What a layer returns lands in the dense layer's own buffer when one is
     * right below (it must outlive the pass when defer_dw), else in the
     * ping-pong pair. */
    int dense_below = i > 0 && m->layers[i - 1].type == NN_LAYER_DENSE;
    float *dx = dense_below ? ws->delta[i - 1] : ws->g[pp];
    /* The bias gradient of a dense layer right below is the column sum of
     * what this layer returns: the fused kernels produce it on the way. */
    float *db_below = dense_below ? grad + m->layers[i - 1].b_off : NULL;
    switch (l->type) {
    case NN_LAYER_DENSE: {
      if (defer_dw && g != dz && g != ws->delta[i]) {
        /* Reached through an identity layer from a ping-pong buffer. */
        memcpy(ws->delta[i], g, (size_t)n * l->out * sizeof(float));
        g = ws->delta[i];
      }
      ws->dg[i] = g;
      if (!defer_dw) nn_dnn_dense_dw(ws->dnn, (uint32_t)i, l, g, in, n, grad + l->w_off);
      if (!db_done) nn_k_colsum(grad + l->b_off, g, n, l->out);
      db_done = 0;
      if (i == 0) return; /* nobody needs the gradient of the images */
      nn_dnn_dense_dx(ws->dnn, (uint32_t)i, l, g, m->params + l->w_off, n, dx);
      break;
    }
    case NN_LAYER_ANTIRECT:
    case NN_LAYER_RELU: {
      /* Folded into the pooling below (see NN_LAYER_MAXPOOL). */
      if (ws->fused[i] == 2 && m->layers[i + 1].type == NN_LAYER_MAXPOOL) continue;
      nn_drop dr = {0, 0, 1.0f};
      if (i + 1 < (int)m->n_layers - 1 && ws->fused[i + 1])
        dr = drop_replay(&m->layers[i + 1], ws, (uint32_t)i + 1);
      if (l->type == NN_LAYER_ANTIRECT)
        nn_k_antirect_bwd(ws->anti_y[i], ws->anti_inv[i], g, n * l->ishape.h * l->ishape.w,
                          l->ishape.c, dx, db_below, dr);
      else
        nn_k_relu_drop_bwd(dx, in, g, n, l->in, db_below, dr);
      db_done = db_below != NULL;
      break;
    }
    case NN_LAYER_CONV2D: {
      /* Always complete here: the trainer sums the shards' blocks. */
      if (ws->gemm[i]) {
        nn_layer d = nn_conv_as_dense(l);
        uint32_t rows = n * l->oshape.h * l->oshape.w;
        nn_dnn_dense_dw(ws->dnn, (uint32_t)i, &d, g, ws->col[i], rows, grad + l->w_off);
        if (!db_done) nn_k_colsum(grad + l->b_off, g, rows, d.out);
        db_done = 0;
        if (i == 0) return;
        nn_dnn_dense_dx(ws->dnn, (uint32_t)i, &d, g, m->params + l->w_off, rows, ws->dcol);
        nn_col2im(ws->dcol, n, l, dx);
        break;
      }
      /* The kernel computes the bias gradient too. */
      int team = nn_dnn_team(ws->dnn);
      unsigned fmt = conv_fmt(ws, (uint32_t)i);
      nn_conv_bwd_w(ws->conv, team, (uint32_t)i, l, fmt, in, g, n, grad + l->w_off,
                    grad + l->b_off);
      db_done = 0;
      if (i == 0) return;
      nn_conv_bwd_d(ws->conv, team, (uint32_t)i, l, fmt, g, m->params + l->w_off, n, dx);
      break;
    }
    case NN_LAYER_MAXPOOL: {
      /* The ReLU below, when the convolution ran it, is folded in: the
       * forward pass recorded its clamped windows as NN_POOL_NONE. */
      uint32_t pn = n;
      nn_layer pl = ws->blk[i] ? pool_blocks(l, ws->cblock, &pn) : *l;
      uint32_t ch = i == 2 && ws->fused[1] == 2 && conv0_dw_fits(m, n)
                        ? conv_pool_chunk(m, ws, 0, n) : 0;
      if (ch) {
        conv_pool_bwd0(m, ws, n, ch, pl, pn / n, g, dx, grad);
        return; /* the first convolution's weights were the last to do */
      }
      nn_maxpool_bwd(g, ws->pool_idx[i], pn, &pl, dx);
      break;
    }
    case NN_LAYER_FLATTEN:
      if (i == 0 || !ws->blk[i - 1]) continue;
      nn_conv_reorder(ws->conv, nn_dnn_team(ws->dnn), (uint32_t)i, l->ishape, n, ws->cblock, 1,
                      g, dx);
      break;
    case NN_LAYER_DROPOUT:
      if (ws->fused[i]) continue; /* done by the activation below */
      if (!drop_active(l, training)) continue; /* identity: reuse g */
      nn_k_dropout(dx, g, (size_t)n * l->in, drop_replay(l, ws, (uint32_t)i));
      break;
    case NN_LAYER_BATCHNORM:
      /* Every shard takes part (the sums are the whole batch's), the first
       * layer too: its gamma and beta have gradients. */
      nn_bn_bwd(l, m->params + l->w_off, in, g, n, ws->blk[i] ? ws->cblock : 0, training != 0,
                ws->sync, ws->bn_acc, ws->bn_stat[i], grad, i > 0 ? dx : NULL);
      db_done = 0;
      if (i == 0) return;
      break;
    case NN_LAYER_SOFTMAX:
      continue;
    }
    if (dx == ws->g[pp]) pp ^= 1;
    g = dx;
  }
}

/* ---------------------------------------------------------------- predict */

/* Only layers at least this wide are worth a transposed copy: a narrow
 * output row (the 10 logits) is too short to vectorise the sparse loop. */
#define PIN_MIN_OUT 64

int nn_workspace_pin(nn_workspace *ws, const nn_model *m) {
  if (!ws || (m && ws->n_layers != m->n_layers)) return NN_EINVAL;
  free(ws->wt_block);
  ws->wt_block = NULL;
  memset(ws->wt, 0, sizeof ws->wt);
  ws->pinned = NULL;
  if (!m) return 0;
  size_t total = 0;
  for (uint32_t i = 0; i < m->n_layers; i++)
    if (m->layers[i].type == NN_LAYER_DENSE && m->layers[i].out >= PIN_MIN_OUT)
      total += round_up((size_t)m->layers[i].in * m->layers[i].out * sizeof(float));
  if (!total) {
    ws->pinned = m;
    return 0;
  }
  if (!(ws->wt_block = aligned_alloc(ALIGN, total))) return NN_ENOMEM;
  char *p = (char *)ws->wt_block;
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    if (l->type != NN_LAYER_DENSE || l->out < PIN_MIN_OUT) continue;
    float *wt = ws->wt[i] = (float *)p;
    const float *w = m->params + l->w_off;
    for (uint32_t o = 0; o < l->out; o++)
      for (uint32_t k = 0; k < l->in; k++) wt[(size_t)k * l->out + o] = w[(size_t)o * l->in + k];
    p += round_up((size_t)l->in * l->out * sizeof(float));
  }
  ws->pinned = m;
  return 0;
}

/* The first dense layer of a batch prediction without the inputs that are 0
 * in every image of the batch (an MNIST batch of 1000 leaves ~600 of 784,
 * one of 64 ~500): their products add nothing. Keeps the runs of the
 * other inputs in ws->cols (start, length), their weights packed in ws->w0
 * ([out][k0], k0 rounded up to 16 with unused inputs) and returns the
 * number of runs; 0 (and k0 = 0) when too few inputs drop out to pay for
 * the copies (the whole layer then runs). The
 * sums are the same terms but blocked differently by oneDNN, so the
 * probabilities can differ from the uncompacted product in the last bits
 * (3.7e-8 at most over the MNIST test set). */
static uint32_t compact_inputs(const nn_model *m, nn_workspace *ws, const uint8_t *u8,
                               uint32_t n) {
  const nn_layer *l0 = &m->layers[0];
  const uint32_t in = m->n_inputs;
  ws->k0 = 0;
  if (l0->type != NN_LAYER_DENSE || l0->in != in) return 0;
  if (!ws->cols || !ws->w0) return 0;
  nn_k_u8_or_rows(ws->used, u8, NULL, n, in);
  const uint32_t nr = nn_input_runs(ws->used, in, ws->cols);
  if (!nr) return 0;
  nn_k_pack_runs(ws->w0, m->params + l0->w_off, l0->out, in, ws->cols);
  ws->w0k = ws->w0;
  const uint32_t K = ws->cols->k;
  ws->k0 = K;
  return nr;
}

static int predict(const nn_model *m, nn_workspace *ws, const uint8_t *u8, const float *f32,
                   uint32_t n, float *probs) {
  const uint32_t classes = nn_model_classes(m), in = m->n_inputs;
  /* On an OpenMP team every product ends in a wait for its slowest member:
   * pieces would multiply those waits (measured slower), so a team takes
   * the whole batch. */
  const uint32_t P = nn_dnn_team(ws->dnn) > 1 ? n : piece_rows(m, n);
  if (P < n && ws->dnn_piece != P) {
    nn_dnn_prepare_piece(ws->dnn, NULL, P);
    ws->dnn_piece = P;
  }
  const uint32_t nr = u8 && n >= COMPACT_MIN_ROWS ? compact_inputs(m, ws, u8, n) : 0;
  for (uint32_t off = 0; off < n; off += P) {
    uint32_t k = n - off < P ? n - off : P;
    if (nr)
      nn_k_u8_gather_runs(ws->x, u8 + (size_t)off * in, k, in, ws->cols);
    else if (u8) nn_k_u8_to_f32(ws->x, u8 + (size_t)off * in, (size_t)k * in);
    else memcpy(ws->x, f32 + (size_t)off * in, (size_t)k * in * sizeof(float));
    ws->predicting = 1;
    const float *p = nn_forward(m, ws, k, 0, NULL);
    ws->predicting = 0;
    int rc = nn_dnn_error(ws->dnn);
    if (rc) {
      ws->k0 = 0;
      return rc;
    }
    /* Staged in the (unused) gradient buffer: a failing call leaves probs alone. */
    memcpy(P < n ? ws->g[0] + (size_t)off * classes : probs, p, (size_t)k * classes * sizeof(float));
  }
  ws->k0 = 0;
  if (P < n) memcpy(probs, ws->g[0], (size_t)n * classes * sizeof(float));
  return 0;
}

int nn_predict_f32(const nn_model *m, nn_workspace *ws, const float *x, uint32_t n,
                   float *probs) {
  if (!m || !ws || !x || !probs || n > ws->max_batch || ws->n_layers != m->n_layers)
    return NN_EINVAL;
  return predict(m, ws, NULL, x, n, probs);
}

int nn_predict_u8(const nn_model *m, nn_workspace *ws, const uint8_t *images,
                  uint32_t n, float *probs) {
  if (!m || !ws || !images || !probs || n > ws->max_batch ||
      ws->n_layers != m->n_layers || m->n_inputs != NN_IMAGE_SIZE)
    return NN_EINVAL;
  return predict(m, ws, images, NULL, n, probs);
}
