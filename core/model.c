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
  m->params = calloc(m->n_params ? m->n_params : 1, sizeof(float));
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
  m->params = malloc(src->n_params * sizeof(float));
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

int nn_workspace_create(nn_workspace **out, const nn_model *m, uint32_t max_batch) {
  if (!out || !m || max_batch == 0 || max_batch > (1u << 20)) return NN_EINVAL;
  *out = NULL;
  nn_workspace *ws = calloc(1, sizeof *ws);
  if (!ws) return NN_ENOMEM;
  ws->max_batch = max_batch;
  ws->n_layers = m->n_layers;

  /* First pass sizes the single block, second pass carves it. */
  size_t B = max_batch, off[2 + 4 * NN_MAX_LAYERS], total = 0, k = 0, dcol = 0;
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
    } else if (l->type == NN_LAYER_CONV2D) {
      size_t c = B * l->oshape.h * l->oshape.w * l->kernel * l->kernel * l->ishape.c;
      off[k++] = total; total += round_up(c * sizeof(float));
      if (i > 0 && c > dcol) dcol = c;
    }
  }
  size_t gsz = round_up(B * m->max_width * sizeof(float));
  off[k] = total; /* dcol */
  total += round_up(dcol * sizeof(float));
  if (total + 2 * gsz > NN_WORKSPACE_MAX_BYTES) {
    free(ws);
    return NN_ETOOBIG;
  }
  ws->block = aligned_alloc(ALIGN, total + 2 * gsz);
  if (!ws->block) {
    free(ws);
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
    } else if (l->type == NN_LAYER_CONV2D) {
      ws->col[i] = (float *)(base + off[k++]);
    }
  }
  ws->dcol = dcol ? (float *)(base + off[k]) : NULL;
  ws->g[0] = (float *)(base + total);
  ws->g[1] = (float *)(base + total + gsz);
  int rc = nn_dnn_create(&ws->dnn);
  if (!rc) rc = nn_dnn_prepare(ws->dnn, m, max_batch, 0);
  if (rc) {
    nn_workspace_free(ws);
    return rc;
  }
  *out = ws;
  return 0;
}

void nn_workspace_free(nn_workspace *ws) {
  if (!ws) return;
  free(ws->wt_block);
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
  return l->type == NN_LAYER_DROPOUT && training && l->rate > 0.f;
}

const float *nn_forward(const nn_model *m, nn_workspace *ws, uint32_t n,
                        int training, nn_rng *rng) {
  const float *in = ws->x;
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    float *out = ws->act[i];
    ws->fused[i] = 0;
    switch (l->type) {
    case NN_LAYER_DENSE:
      if (n == 1 && ws->pinned == m && ws->wt[i])
        nn_k_sparse_row(out, in, ws->wt[i], m->params + l->b_off, l->in, l->out);
      else
        nn_dnn_dense_fwd(ws->dnn, i, l, in, n, m->params + l->w_off, m->params + l->b_off,
                         out);
      break;
    case NN_LAYER_ANTIRECT:
    case NN_LAYER_RELU: {
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
      if (l->type == NN_LAYER_ANTIRECT)
        /* Per position across channels; a vector is one position. */
        nn_k_antirect_fwd(in, n * l->ishape.h * l->ishape.w, l->ishape.c, ws->anti_y[a],
                          ws->anti_inv[a], out, dr);
      else
        nn_k_relu_drop_fwd(out, in, n, l->in, dr);
      break;
    }
    case NN_LAYER_CONV2D: {
      nn_layer d = nn_conv_as_dense(l);
      nn_im2col(in, n, l, ws->col[i]);
      nn_dnn_dense_fwd(ws->dnn, i, &d, ws->col[i], n * l->oshape.h * l->oshape.w,
                       m->params + l->w_off, m->params + l->b_off, out);
      break;
    }
    case NN_LAYER_MAXPOOL:
      nn_maxpool_fwd(in, n, l, out, ws->pool_idx[i]);
      break;
    case NN_LAYER_FLATTEN:
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
    case NN_LAYER_MAXPOOL:
      nn_maxpool_bwd(g, ws->pool_idx[i], n, l, dx);
      break;
    case NN_LAYER_FLATTEN:
      continue;
    case NN_LAYER_DROPOUT:
      if (ws->fused[i]) continue; /* done by the activation below */
      if (!drop_active(l, training)) continue; /* identity: reuse g */
      nn_k_dropout(dx, g, (size_t)n * l->in, drop_replay(l, ws, (uint32_t)i));
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

int nn_predict_f32(const nn_model *m, nn_workspace *ws, const float *x, uint32_t n,
                   float *probs) {
  if (!m || !ws || !x || !probs || n > ws->max_batch || ws->n_layers != m->n_layers)
    return NN_EINVAL;
  memcpy(ws->x, x, (size_t)n * m->n_inputs * sizeof(float));
  const float *p = nn_forward(m, ws, n, 0, NULL);
  int rc = nn_dnn_error(ws->dnn);
  if (rc) return rc;
  memcpy(probs, p, (size_t)n * nn_model_classes(m) * sizeof(float));
  return 0;
}

int nn_predict_u8(const nn_model *m, nn_workspace *ws, const uint8_t *images,
                  uint32_t n, float *probs) {
  if (!m || !ws || !images || !probs || n > ws->max_batch ||
      ws->n_layers != m->n_layers || m->n_inputs != NN_IMAGE_SIZE)
    return NN_EINVAL;
  nn_k_u8_to_f32(ws->x, images, (size_t)n * m->n_inputs);
  const float *p = nn_forward(m, ws, n, 0, NULL);
  int rc = nn_dnn_error(ws->dnn);
  if (rc) return rc;
  memcpy(probs, p, (size_t)n * nn_model_classes(m) * sizeof(float));
  return 0;
}
