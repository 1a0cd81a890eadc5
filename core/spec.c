/* Networks as data: user layer specs, the presets, and shape inference,
 * which turns a spec into the built layer table of a model (an activation
 * inside a dense or conv2d spec becomes its own RELU layer; the softmax is
 * appended). Every refusal names the layer and the reason. */
#include "nn_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct { nn_layer_type t; const char *name; } TYPES[] = {
  {NN_LAYER_DENSE, "dense"},       {NN_LAYER_CONV2D, "conv2d"},
  {NN_LAYER_MAXPOOL, "max_pool2d"}, {NN_LAYER_FLATTEN, "flatten"},
  {NN_LAYER_DROPOUT, "dropout"},   {NN_LAYER_RELU, "relu"},
  {NN_LAYER_ANTIRECT, "antirectifier"}, {NN_LAYER_BATCHNORM, "batch_norm"},
  {NN_LAYER_SOFTMAX, "softmax"},
};

const char *nn_layer_type_name(nn_layer_type t) {
  for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++)
    if (TYPES[i].t == t) return TYPES[i].name;
  return "?";
}

int nn_layer_type_parse(const char *name, nn_layer_type *t) {
  for (size_t i = 0; name && i < sizeof TYPES / sizeof *TYPES; i++)
    if (!strcmp(TYPES[i].name, name)) {
      *t = TYPES[i].t;
      return 0;
    }
  return NN_EINVAL;
}

/* ---------------------------------------------------------------- presets */

#define DENSE(u, a) {.type = NN_LAYER_DENSE, .units = (u), .activation = (a)}
#define LAYER(t) {.type = (t)}
#define DROP(r) {.type = NN_LAYER_DROPOUT, .rate = (r)}

static const nn_layer_spec P_ANTI[] = {
  DENSE(256, NN_ACT_NONE), LAYER(NN_LAYER_ANTIRECT), DROP(0.1f),
  DENSE(256, NN_ACT_NONE), LAYER(NN_LAYER_ANTIRECT), DROP(0.1f),
  DENSE(10, NN_ACT_NONE),
};
static const nn_layer_spec P_RELU[] = {
  DENSE(512, NN_ACT_NONE), LAYER(NN_LAYER_RELU), DROP(0.1f),
  DENSE(512, NN_ACT_NONE), LAYER(NN_LAYER_RELU), DROP(0.1f),
  DENSE(10, NN_ACT_NONE),
};
static const nn_layer_spec P_CNN[] = {
  {.type = NN_LAYER_CONV2D, .filters = 32, .kernel = 3, .stride = 1, .activation = NN_ACT_RELU},
  {.type = NN_LAYER_MAXPOOL, .kernel = 2, .stride = 2},
  {.type = NN_LAYER_CONV2D, .filters = 64, .kernel = 3, .stride = 1, .activation = NN_ACT_RELU},
  {.type = NN_LAYER_MAXPOOL, .kernel = 2, .stride = 2},
  LAYER(NN_LAYER_FLATTEN), DROP(0.5f), DENSE(10, NN_ACT_NONE),
};

static const struct { const char *name; const nn_layer_spec *s; uint32_t n; } PRESETS[] = {
  {"antirectifier", P_ANTI, sizeof P_ANTI / sizeof *P_ANTI},
  {"relu", P_RELU, sizeof P_RELU / sizeof *P_RELU},
  {"cnn", P_CNN, sizeof P_CNN / sizeof *P_CNN},
};

int nn_preset_spec(const char *name, const nn_layer_spec **specs, uint32_t *n) {
  for (size_t i = 0; name && i < sizeof PRESETS / sizeof *PRESETS; i++)
    if (!strcmp(PRESETS[i].name, name)) {
      *specs = PRESETS[i].s;
      *n = PRESETS[i].n;
      return 0;
    }
  return NN_EINVAL;
}

const char *nn_preset_name(uint32_t i) {
  return i < sizeof PRESETS / sizeof *PRESETS ? PRESETS[i].name : NULL;
}

/* ---------------------------------------------------------------- shapes */

static uint64_t elems(nn_shape s) { return (uint64_t)s.h * s.w * s.c; }

/* Appends a built layer; the caller fills the type-specific parts. */
static nn_layer *push(nn_model *m, nn_layer_type t, uint32_t spec, nn_shape in) {
  nn_layer *l = &m->layers[m->n_layers++];
  memset(l, 0, sizeof *l);
  l->type = t;
  l->spec = spec;
  l->ishape = l->oshape = in;
  l->in = l->out = (uint32_t)elems(in);
  return l;
}

#define BAD(...) nn_fail(err, NN_EINVAL, __VA_ARGS__)

static int layout_conv(nn_model *m, const nn_layer_spec *s, uint32_t j, nn_shape in, size_t *np,
                       nn_err *err) {
  const char *tn = nn_layer_type_name(s->type);
  uint32_t k = s->kernel, st = s->stride ? s->stride : 1;
  if (s->filters < 1 || s->filters > NN_MAX_FILTERS)
    return BAD("layers[%u] %s: filters must be 1..%u, not %u", j, tn, NN_MAX_FILTERS, s->filters);
  if (k < 1 || k > 32) return BAD("layers[%u] %s: kernel must be 1..32, not %u", j, tn, k);
  if (st != 1 && st != 2) return BAD("layers[%u] %s: stride must be 1 or 2, not %u", j, tn, st);
  if (s->padding != NN_PAD_VALID && s->padding != NN_PAD_SAME)
    return BAD("layers[%u] %s: padding must be \"valid\" or \"same\"", j, tn);
  if (s->activation != NN_ACT_NONE && s->activation != NN_ACT_RELU)
    return BAD("layers[%u] %s: activation must be \"none\" or \"relu\"", j, tn);
  nn_shape out = {0, 0, s->filters};
  uint32_t pt = 0, pl = 0;
  if (s->padding == NN_PAD_VALID) {
    if (k > in.h || k > in.w)
      return BAD("layers[%u] %s: kernel %u is larger than its %ux%u input", j, tn, k, in.h, in.w);
    out.h = (in.h - k) / st + 1;
    out.w = (in.w - k) / st + 1;
  } else {
    /* TensorFlow's "same": ceil(in / stride) outputs, the odd padding pixel
     * at the bottom/right. */
    out.h = (in.h + st - 1) / st;
    out.w = (in.w + st - 1) / st;
    uint32_t ph = (out.h - 1) * st + k > in.h ? (out.h - 1) * st + k - in.h : 0;
    uint32_t pw = (out.w - 1) * st + k > in.w ? (out.w - 1) * st + k - in.w : 0;
    pt = ph / 2;
    pl = pw / 2;
  }
  if (elems(out) > NN_MAX_ELEMS)
    return BAD("layers[%u] %s: output %ux%ux%u has more than %u values per image", j, tn, out.h,
               out.w, out.c, NN_MAX_ELEMS);
  uint64_t kk = (uint64_t)k * k * in.c;
  if ((uint64_t)out.h * out.w * kk > NN_MAX_ELEMS * 4ull)
    return BAD("layers[%u] %s: its %ux%u kernel over %u channels needs too much scratch memory",
               j, tn, k, k, in.c);
  nn_layer *l = push(m, NN_LAYER_CONV2D, j, in);
  l->oshape = out;
  l->out = (uint32_t)elems(out);
  l->kernel = k;
  l->stride = st;
  l->pad_t = pt;
  l->pad_l = pl;
  l->w_off = *np;
  *np += kk * s->filters;
  l->b_off = *np;
  *np += s->filters;
  return 0;
}

static int layout_one(nn_model *m, const nn_layer_spec *s, uint32_t j, nn_shape *cur,
                      size_t *np, nn_err *err) {
  const char *tn = nn_layer_type_name(s->type);
  nn_shape in = *cur;
  nn_layer *l;
  int rc;
  switch (s->type) {
  case NN_LAYER_DENSE:
    if (s->units < 1 || s->units > NN_MAX_WIDTH)
      return BAD("layers[%u] dense: units must be 1..%u, not %u", j, NN_MAX_WIDTH, s->units);
    if (s->activation != NN_ACT_NONE && s->activation != NN_ACT_RELU)
      return BAD("layers[%u] dense: activation must be \"none\" or \"relu\"", j);
    l = push(m, NN_LAYER_DENSE, j, in);
    l->oshape = (nn_shape){1, 1, s->units};
    l->out = s->units;
    l->w_off = *np;
    *np += (size_t)l->in * l->out;
    l->b_off = *np;
    *np += l->out;
    break;
  case NN_LAYER_CONV2D:
    if ((rc = layout_conv(m, s, j, in, np, err))) return rc;
    break;
  case NN_LAYER_MAXPOOL: {
    uint32_t k = s->kernel, st = s->stride ? s->stride : s->kernel;
    if (k < 1 || k > 32) return BAD("layers[%u] max_pool2d: size must be 1..32, not %u", j, k);
    if (st < 1 || st > 32) return BAD("layers[%u] max_pool2d: stride must be 1..32, not %u", j, st);
    if (in.h == 1 && in.w == 1 && in.c > 1)
      return BAD("layers[%u] max_pool2d: its input is a flat vector of %u, not a feature map", j,
                 in.c);
    if (k > in.h || k > in.w)
      return BAD("layers[%u] max_pool2d: size %u is larger than its %ux%u input", j, k, in.h,
                 in.w);
    l = push(m, NN_LAYER_MAXPOOL, j, in);
    l->kernel = k;
    l->stride = st;
    l->oshape = (nn_shape){(in.h - k) / st + 1, (in.w - k) / st + 1, in.c};
    l->out = (uint32_t)elems(l->oshape);
    break;
  }
  case NN_LAYER_FLATTEN:
    l = push(m, NN_LAYER_FLATTEN, j, in);
    l->oshape = (nn_shape){1, 1, l->in};
    break;
  case NN_LAYER_DROPOUT:
    /* NaN fails both comparisons. */
    if (!(s->rate >= 0.f && s->rate < 1.f))
      return BAD("layers[%u] dropout: rate must be in [0, 1), not %g", j, (double)s->rate);
    l = push(m, NN_LAYER_DROPOUT, j, in);
    l->rate = s->rate;
    break;
  case NN_LAYER_RELU:
    push(m, NN_LAYER_RELU, j, in);
    break;
  case NN_LAYER_ANTIRECT:
    if (in.c < 2)
      return BAD("layers[%u] antirectifier: needs at least 2 channels (or units) to normalise "
                 "across, its input has %u",
                 j, in.c);
    if (elems(in) * 2 > NN_MAX_ELEMS || in.c * 2ull > NN_MAX_WIDTH * 2ull)
      return BAD("layers[%u] antirectifier: its output would be too large", j);
    l = push(m, NN_LAYER_ANTIRECT, j, in);
    l->oshape = (nn_shape){in.h, in.w, in.c * 2};
    l->out = l->in * 2;
    break;
  case NN_LAYER_BATCHNORM:
    /* NaN fails the comparisons. */
    if (!(s->momentum >= 0.f && s->momentum < 1.f))
      return BAD("layers[%u] batch_norm: momentum must be in [0, 1), not %g", j,
                 (double)s->momentum);
    if (!(s->epsilon > 0.f && s->epsilon <= 1.f))
      return BAD("layers[%u] batch_norm: epsilon must be in (0, 1], not %g", j,
                 (double)s->epsilon);
    l = push(m, NN_LAYER_BATCHNORM, j, in);
    l->momentum = s->momentum;
    l->epsilon = s->epsilon;
    /* Per channel (a vector's units are its channels): gamma, then beta and
     * the two moving statistics, which follow beta. */
    l->w_off = *np;
    *np += in.c;
    l->b_off = *np;
    *np += 3 * (size_t)in.c;
    break;
  case NN_LAYER_SOFTMAX:
    return BAD("layers[%u] softmax: the softmax is added after the last layer; leave it out", j);
  default:
    return BAD("layers[%u]: unknown layer type %d", j, (int)s->type);
  }
  *cur = m->layers[m->n_layers - 1].oshape;
  if (s->activation == NN_ACT_RELU &&
      (s->type == NN_LAYER_DENSE || s->type == NN_LAYER_CONV2D))
    push(m, NN_LAYER_RELU, j, *cur);
  if (*np > NN_MAX_PARAMS)
    return nn_fail(err, NN_ETOOBIG,
                   "layers[%u] %s: the network passes the limit of %u parameters here", j, tn,
                   NN_MAX_PARAMS);
  return 0;
}

int nn_model_layout_spec(nn_model *m, const char *arch, nn_shape input,
                         const nn_layer_spec *specs, uint32_t n, nn_err *err) {
  if (!m || (!specs && n)) return BAD("no layer list");
  if (n == 0) return BAD("the network has no layers");
  if (n > NN_MAX_SPECS)
    return nn_fail(err, NN_ETOOBIG, "the network has %u layers, more than the limit of %u", n,
                   NN_MAX_SPECS);
  if (input.h < 1 || input.w < 1 || input.c < 1 || elems(input) > NN_MAX_WIDTH)
    return BAD("input shape %ux%ux%u is not usable", input.h, input.w, input.c);
  memset(m, 0, offsetof(nn_model, specs));
  snprintf(m->arch, sizeof m->arch, "%s", arch ? arch : "custom");
  m->input = input;
  m->n_inputs = (uint32_t)elems(input);
  m->max_width = m->n_inputs;
  nn_shape cur = input;
  size_t np = 0;
  for (uint32_t j = 0; j < n; j++) {
    int rc = layout_one(m, &specs[j], j, &cur, &np, err);
    if (rc) return rc;
  }
  const nn_layer_spec *last = &specs[n - 1];
  if (last->type != NN_LAYER_DENSE || last->units < 2 || last->units > NN_MAX_CLASSES ||
      last->activation != NN_ACT_NONE)
    return BAD("layers[%u] %s: the last layer must be dense with one unit per class (2..%u) "
               "and no activation; the softmax is added after it",
               n - 1, nn_layer_type_name(last->type), NN_MAX_CLASSES);
  push(m, NN_LAYER_SOFTMAX, n, cur);
  for (uint32_t i = 0; i < m->n_layers; i++)
    if (m->layers[i].out > m->max_width) m->max_width = m->layers[i].out;
  m->n_params = np;
  m->n_specs = n;
  memcpy(m->specs, specs, n * sizeof *specs);
  return 0;
}

/* Per-sample bytes of a workspace for m (what nn_workspace_create sizes at
 * most: a convolution has a patch matrix only where it runs as im2col +
 * GEMM, which depends on the CPU, so every one is counted). */
size_t nn_workspace_bytes_per_row(const nn_model *m) {
  size_t f = m->n_inputs + 2 * (size_t)m->max_width, dcol = 0;
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    f += l->out;
    if (l->type == NN_LAYER_DENSE) f += l->out;
    if (l->type == NN_LAYER_ANTIRECT) f += l->in + (size_t)l->ishape.h * l->ishape.w;
    if (l->type == NN_LAYER_MAXPOOL) f += l->out; /* argmax indices */
    if (l->type == NN_LAYER_CONV2D) {
      size_t col = (size_t)l->oshape.h * l->oshape.w * l->kernel * l->kernel * l->ishape.c;
      f += col;
      if (col > dcol) dcol = col;
    }
  }
  return (f + dcol) * sizeof(float);
}

int nn_spec_check(const nn_layer_spec *specs, uint32_t n, nn_shape input, uint32_t classes,
                  uint32_t batch, uint32_t threads, size_t *n_params, nn_err *err) {
  if (classes < 2 || classes > NN_MAX_CLASSES)
    return BAD("%u classes: a data set has 2..%u", classes, NN_MAX_CLASSES);
  if (n && specs[n - 1].type == NN_LAYER_DENSE && specs[n - 1].units != classes)
    return BAD("layers[%u] dense: %u units, but the data set has %u classes (one unit per class)",
               n - 1, specs[n - 1].units, classes);
  nn_model *m = malloc(sizeof *m);
  if (!m) return nn_fail(err, NN_ENOMEM, "out of memory");
  int rc = nn_model_layout_spec(m, "check", input, specs, n, err);
  if (!rc && batch) {
    uint32_t t = threads ? threads : 1;
    size_t rows = (size_t)((batch + t - 1) / t) * t;
    size_t need = nn_workspace_bytes_per_row(m) * rows;
    if (need > NN_ACT_BUDGET_BYTES)
      rc = nn_fail(err, NN_ETOOBIG,
                   "the network needs %zu MiB of activations for a batch of %u on %u threads, "
                   "more than the %zu MiB budget: use a smaller batch or narrower layers",
                   need >> 20, batch, t, NN_ACT_BUDGET_BYTES >> 20);
  }
  if (!rc && n_params) *n_params = m->n_params;
  free(m);
  return rc;
}
