/* ONNX export: builds an Onnx__ModelProto (protobuf-c code generated from
 * Debian's onnx.proto at build time) over the model's weights, then packs
 * it. One walker visits the core's layer list; each layer kind has one
 * emitter in LAYERS[] that appends standard operators. */
#include "srv_onnx.h"

#include <cJSON.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"

/* ---------------------------------------------------------------- builder */

/* Every message of one export lives in this pool and goes in one free. */
typedef struct blk {
  struct blk *next;
  max_align_t data[];
} blk;

typedef struct gb {
  blk *pool;
  int rc;                 /* first failure; sticky, so emitters check once */
  char *msg;
  size_t msglen;
  Onnx__NodeProto **node;
  size_t n_node, cap_node;
  Onnx__TensorProto **init;
  size_t n_init, cap_init;
  /* The value flowing from layer to layer and its per-sample shape: rank 4
   * is [N,C,H,W] (the image, [N,1,28,28]; what conv/pool emitters would
   * read and update), rank 2 is [N,width]. width is C*H*W at rank 4. */
  const char *cur;
  uint32_t rank, width, chw[3];
  const char *axes1, *l2_eps; /* shared constants, made on first use */
} gb;

static int fail(gb *g, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(gb *g, int rc, const char *fmt, ...) {
  if (g->rc) return g->rc;
  g->rc = rc;
  if (g->msg && g->msglen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->msg, g->msglen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

static void *palloc(gb *g, size_t n) {
  if (g->rc) return NULL;
  blk *b = calloc(1, sizeof *b + n);
  if (!b) {
    fail(g, -ENOMEM, "out of memory while building the ONNX graph");
    return NULL;
  }
  b->next = g->pool;
  g->pool = b;
  return b->data;
}

static void pool_free(gb *g) {
  while (g->pool) {
    blk *n = g->pool->next;
    free(g->pool);
    g->pool = n;
  }
}

static char *pstr(gb *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *pstr(gb *g, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = n >= 0 ? palloc(g, (size_t)n + 1) : NULL;
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

/* Appends a node op(in...) -> out, named after its output (unique). */
static Onnx__NodeProto *node(gb *g, const char *op, const char *out, size_t n_in,
                             const char *const *in) {
  if (g->rc) return NULL;
  if (g->n_node == g->cap_node) {
    fail(g, -EINVAL, "internal error: the ONNX graph needs more than %zu nodes", g->cap_node);
    return NULL;
  }
  Onnx__NodeProto *n = palloc(g, sizeof *n);
  char **ins = palloc(g, n_in * sizeof *ins), **outs = palloc(g, sizeof *outs);
  Onnx__AttributeProto **attrs = palloc(g, 4 * sizeof *attrs) /* Conv has 3 */;
  if (!n || !ins || !outs || !attrs || !out) return fail(g, -ENOMEM, "out of memory"), NULL;
  onnx__node_proto__init(n);
  for (size_t i = 0; i < n_in; i++) {
    if (!in[i]) return fail(g, -ENOMEM, "out of memory"), NULL;
    ins[i] = (char *)in[i];
  }
  outs[0] = (char *)out;
  n->n_input = n_in;
  n->input = ins;
  n->n_output = 1;
  n->output = outs;
  n->name = (char *)out;
  n->op_type = (char *)op;
  n->attribute = attrs;
  g->node[g->n_node++] = n;
  return n;
}

/* Adds an integer (n == 0: from v) or integer-list attribute to a node. */
static void attr_ints(gb *g, Onnx__NodeProto *n, const char *name, size_t cnt, const int64_t *v) {
  if (!n || g->rc) return;
  Onnx__AttributeProto *a = palloc(g, sizeof *a);
  int64_t *vals = cnt ? palloc(g, cnt * sizeof *vals) : NULL;
  if (!a || (cnt && !vals)) return;
  onnx__attribute_proto__init(a);
  a->name = (char *)name;
  a->has_type = 1;
  if (cnt) {
    memcpy(vals, v, cnt * sizeof *vals);
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    a->n_ints = cnt;
    a->ints = vals;
  } else {
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    a->has_i = 1;
    a->i = *v;
  }
  n->attribute[n->n_attribute++] = a;
}

static void attr_int(gb *g, Onnx__NodeProto *n, const char *name, int64_t v) {
  attr_ints(g, n, name, 0, &v);
}

static void attr_float(gb *g, Onnx__NodeProto *n, const char *name, float v) {
  if (!n || g->rc) return;
  Onnx__AttributeProto *a = palloc(g, sizeof *a);
  if (!a) return;
  onnx__attribute_proto__init(a);
  a->name = (char *)name;
  a->has_type = 1;
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
  a->has_f = 1;
  a->f = v;
  n->attribute[n->n_attribute++] = a;
}

/* Adds an initializer. f32 (n floats) or i64 (n int64s) is referenced, not
 * copied: it must outlive the export (model weights do). */
static const char *tensor(gb *g, const char *name, size_t ndims, const int64_t *dims,
                          const float *f32, const int64_t *i64, size_t n) {
  if (g->rc || !name) return NULL;
  if (g->n_init == g->cap_init) {
    fail(g, -EINVAL, "internal error: more than %zu ONNX initializers", g->cap_init);
    return NULL;
  }
  Onnx__TensorProto *t = palloc(g, sizeof *t);
  int64_t *d = palloc(g, (ndims ? ndims : 1) * sizeof *d);
  if (!t || !d) return NULL;
  onnx__tensor_proto__init(t);
  if (ndims) memcpy(d, dims, ndims * sizeof *d);
  t->n_dims = ndims;
  t->dims = d;
  t->has_data_type = 1;
  t->name = (char *)name;
  if (f32) {
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->n_float_data = n;
    t->float_data = (float *)f32;
  } else {
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    t->n_int64_data = n;
    t->int64_data = (int64_t *)i64;
  }
  g->init[g->n_init++] = t;
  return name;
}

/* A graph input or output: float32 [N, dims...] with N symbolic. */
static Onnx__ValueInfoProto *value_info(gb *g, const char *name, size_t ndims,
                                        const int64_t *dims) {
  Onnx__ValueInfoProto *v = palloc(g, sizeof *v);
  Onnx__TypeProto *tp = palloc(g, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = palloc(g, sizeof *tt);
  Onnx__TensorShapeProto *sh = palloc(g, sizeof *sh);
  Onnx__TensorShapeProto__Dimension **dv = palloc(g, (ndims + 1) * sizeof *dv);
  if (!v || !tp || !tt || !sh || !dv) return NULL;
  for (size_t i = 0; i <= ndims; i++) {
    Onnx__TensorShapeProto__Dimension *d = dv[i] = palloc(g, sizeof *d);
    if (!d) return NULL;
    onnx__tensor_shape_proto__dimension__init(d);
    if (i == 0) {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      d->dim_param = "N";
    } else {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      d->dim_value = dims[i - 1];
    }
  }
  onnx__tensor_shape_proto__init(sh);
  sh->n_dim = ndims + 1;
  sh->dim = dv;
  onnx__type_proto__tensor__init(tt);
  tt->has_elem_type = 1;
  tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  tt->shape = sh;
  onnx__type_proto__init(tp);
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  onnx__value_info_proto__init(v);
  v->name = (char *)name;
  v->type = tp;
  return v;
}

/* ---------------------------------------------------------------- layers */

#define IN(...) (sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)), \
                ((const char *const[]){__VA_ARGS__})

/* Dense layers and the rest of today's layers work on [N,width]: the image
 * (or a future conv stack's [N,C,H,W]) is flattened where one first needs
 * it. */
static void ensure_flat(gb *g, uint32_t i) {
  if (g->rank == 2 || g->rc) return;
  if (g->chw[0] > 1) {
    /* The core's feature maps are NHWC: flatten in that order so the dense
     * weights after it line up. */
    const char *t = pstr(g, "layer%u.to_nhwc", i);
    attr_ints(g, node(g, "Transpose", t, IN(g->cur)), "perm", 4, (int64_t[]){0, 2, 3, 1});
    g->cur = t;
  }
  const char *out = pstr(g, "layer%u.flatten", i);
  attr_int(g, node(g, "Flatten", out, IN(g->cur)), "axis", 1);
  g->cur = out;
  g->rank = 2;
}

/* Layers that work on feature maps as they are (conv, pool, relu, a
 * feature-map antirectifier) check the width without flattening. */
static int check_width(gb *g, const nn_model *m, uint32_t i, const char *kind) {
  if (!g->rc && m->layers[i].in != g->width)
    fail(g, -EINVAL, "layer %u (%s) expects %u inputs per sample but receives %u", i + 1, kind,
         m->layers[i].in, g->width);
  return g->rc;
}

static int check_in(gb *g, const nn_model *m, uint32_t i, const char *kind) {
  ensure_flat(g, i);
  if (!g->rc && m->layers[i].in != g->width)
    fail(g, -EINVAL, "layer %u (%s) expects %u inputs per sample but receives %u", i + 1, kind,
         m->layers[i].in, g->width);
  return g->rc;
}

static int emit_dense(gb *g, const nn_model *m, uint32_t i) {
  const nn_layer *l = &m->layers[i];
  if (check_in(g, m, i, "dense")) return g->rc;
  if (l->w_off + (size_t)l->in * l->out > m->n_params || l->b_off + l->out > m->n_params)
    return fail(g, -EINVAL, "layer %u (dense): weights lie outside the parameter block", i + 1);
  /* Weights are stored [out][in]: Gemm with transB reads them as they are. */
  const char *w = tensor(g, pstr(g, "layer%u.dense.W", i), 2,
                         (int64_t[]){l->out, l->in}, m->params + l->w_off, NULL,
                         (size_t)l->in * l->out);
  const char *b = tensor(g, pstr(g, "layer%u.dense.b", i), 1, (int64_t[]){l->out},
                         m->params + l->b_off, NULL, l->out);
  const char *out = pstr(g, "layer%u.dense", i);
  attr_int(g, node(g, "Gemm", out, IN(g->cur, w, b)), "transB", 1);
  g->cur = out;
  g->width = l->out;
  return g->rc;
}

/* Keras antirectifier: centre, l2_normalize (x / sqrt(max(sum(x^2),
 * 1e-12)), the core's epsilon), then [relu(x), relu(-x)]. ReduceSum takes
 * its axes as an input from opset 13; ReduceMean still as an attribute. */
static int emit_antirect(gb *g, const nn_model *m, uint32_t i) {
  /* On a feature map [N,C,H,W] the same nodes work across channels (axis
   * 1) at every position, as the core does. */
  int map = g->rank == 4 && m->layers[i].ishape.c > 1 && g->chw[0] == m->layers[i].ishape.c;
  if (map ? check_width(g, m, i, "antirectifier") : check_in(g, m, i, "antirectifier"))
    return g->rc;
  static const int64_t axis1[] = {1};
  static const float eps = 1e-12f;
  if (!g->axes1) g->axes1 = tensor(g, "const.axes_1", 1, (int64_t[]){1}, NULL, axis1, 1);
  if (!g->l2_eps) g->l2_eps = tensor(g, "const.l2_epsilon", 0, NULL, &eps, NULL, 1);
  const char *x = g->cur;
#define V(s) pstr(g, "layer%u.antirect." s, i)
  const char *mean = V("mean"), *c = V("centred"), *sq = V("squared"), *ss = V("sum_squares"),
             *cl = V("clamped"), *nrm = V("norm"), *y = V("normalised"), *pos = V("pos"),
             *ny = V("negated"), *neg = V("neg"), *out = V("out");
#undef V
  attr_ints(g, node(g, "ReduceMean", mean, IN(x)), "axes", 1, axis1);
  node(g, "Sub", c, IN(x, mean));
  node(g, "Mul", sq, IN(c, c));
  node(g, "ReduceSum", ss, IN(sq, g->axes1)); /* keepdims defaults to 1 */
  node(g, "Max", cl, IN(ss, g->l2_eps));
  node(g, "Sqrt", nrm, IN(cl));
  node(g, "Div", y, IN(c, nrm));
  node(g, "Relu", pos, IN(y));
  node(g, "Neg", ny, IN(y));
  node(g, "Relu", neg, IN(ny));
  attr_int(g, node(g, "Concat", out, IN(pos, neg)), "axis", 1);
  g->cur = out;
  g->width *= 2;
  if (map) g->chw[0] *= 2;
  return g->rc;
}

static int emit_relu(gb *g, const nn_model *m, uint32_t i) {
  if (g->rank == 4 ? check_width(g, m, i, "relu") : check_in(g, m, i, "relu")) return g->rc;
  const char *out = pstr(g, "layer%u.relu", i);
  node(g, "Relu", out, IN(g->cur));
  g->cur = out;
  return g->rc;
}

/* Inverted dropout is the identity at inference: nothing to emit. */
static int emit_dropout(gb *g, const nn_model *m, uint32_t i) {
  (void)m;
  (void)i;
  return g->rc;
}

static int emit_softmax(gb *g, const nn_model *m, uint32_t i) {
  if (check_in(g, m, i, "softmax")) return g->rc;
  attr_int(g, node(g, "Softmax", "probabilities", IN(g->cur)), "axis", 1);
  g->cur = "probabilities";
  return g->rc;
}

/* Conv: the core keeps weights [M][kH][kW][C] (NHWC); ONNX wants
 * [M][C][kH][kW]: a reordered copy in the pool. Padding is explicit
 * (TensorFlow's "same" puts the odd pixel at the bottom/right). */
static int emit_conv(gb *g, const nn_model *m, uint32_t i) {
  const nn_layer *l = &m->layers[i];
  if (g->rank != 4) return fail(g, -EINVAL, "layer %u (conv2d) needs a feature map", i + 1);
  if (check_width(g, m, i, "conv2d")) return g->rc;
  uint32_t M = l->oshape.c, C = l->ishape.c, k = l->kernel;
  size_t nw = (size_t)M * C * k * k;
  if (l->w_off + nw > m->n_params || l->b_off + M > m->n_params)
    return fail(g, -EINVAL, "layer %u (conv2d): weights lie outside the parameter block", i + 1);
  float *w = palloc(g, nw * sizeof *w);
  if (!w) return g->rc;
  const float *src = m->params + l->w_off;
  for (uint32_t o = 0; o < M; o++)
    for (uint32_t y = 0; y < k; y++)
      for (uint32_t x = 0; x < k; x++)
        for (uint32_t c = 0; c < C; c++)
          w[(((size_t)o * C + c) * k + y) * k + x] = src[(((size_t)o * k + y) * k + x) * C + c];
  const char *wn = tensor(g, pstr(g, "layer%u.conv.W", i), 4, (int64_t[]){M, C, k, k}, w, NULL, nw);
  const char *bn = tensor(g, pstr(g, "layer%u.conv.b", i), 1, (int64_t[]){M},
                          m->params + l->b_off, NULL, M);
  int64_t pb = (int64_t)(l->oshape.h - 1) * l->stride + k - l->ishape.h - l->pad_t;
  int64_t pr = (int64_t)(l->oshape.w - 1) * l->stride + k - l->ishape.w - l->pad_l;
  const char *out = pstr(g, "layer%u.conv", i);
  Onnx__NodeProto *n = node(g, "Conv", out, IN(g->cur, wn, bn));
  attr_ints(g, n, "kernel_shape", 2, (int64_t[]){k, k});
  attr_ints(g, n, "strides", 2, (int64_t[]){l->stride, l->stride});
  attr_ints(g, n, "pads", 4, (int64_t[]){l->pad_t, l->pad_l, pb > 0 ? pb : 0, pr > 0 ? pr : 0});
  g->cur = out;
  g->chw[0] = M;
  g->chw[1] = l->oshape.h;
  g->chw[2] = l->oshape.w;
  g->width = l->out;
  return g->rc;
}

static int emit_maxpool(gb *g, const nn_model *m, uint32_t i) {
  const nn_layer *l = &m->layers[i];
  if (g->rank != 4) return fail(g, -EINVAL, "layer %u (max_pool2d) needs a feature map", i + 1);
  if (check_width(g, m, i, "max_pool2d")) return g->rc;
  const char *out = pstr(g, "layer%u.maxpool", i);
  Onnx__NodeProto *n = node(g, "MaxPool", out, IN(g->cur));
  attr_ints(g, n, "kernel_shape", 2, (int64_t[]){l->kernel, l->kernel});
  attr_ints(g, n, "strides", 2, (int64_t[]){l->stride, l->stride});
  g->cur = out;
  g->chw[1] = l->oshape.h;
  g->chw[2] = l->oshape.w;
  g->width = l->out;
  return g->rc;
}

/* batch_norm at inference: BatchNormalization on the moving statistics,
 * per channel (axis 1 of [N,C,H,W], the units of [N,C]); the core keeps
 * gamma, beta, mean and variance in that order, so the four inputs are
 * slices of the weights as they are. */
static int emit_batchnorm(gb *g, const nn_model *m, uint32_t i) {
  const nn_layer *l = &m->layers[i];
  const uint32_t c = l->ishape.c;
  int map = g->rank == 4 && g->chw[0] == c;
  if (map ? check_width(g, m, i, "batch_norm") : check_in(g, m, i, "batch_norm")) return g->rc;
  if (l->b_off != l->w_off + c || l->w_off + 4 * (size_t)c > m->n_params)
    return fail(g, -EINVAL, "layer %u (batch_norm): weights lie outside the parameter block",
                i + 1);
  const float *p = m->params + l->w_off;
  const char *in[5] = {g->cur};
  static const char *const part[4] = {"gamma", "beta", "moving_mean", "moving_variance"};
  for (int k = 0; k < 4; k++)
    in[k + 1] = tensor(g, pstr(g, "layer%u.batch_norm.%s", i, part[k]), 1, (int64_t[]){c},
                       p + (size_t)k * c, NULL, c);
  const char *out = pstr(g, "layer%u.batch_norm", i);
  Onnx__NodeProto *n = node(g, "BatchNormalization", out, 5, in);
  attr_float(g, n, "epsilon", l->epsilon);
  attr_float(g, n, "momentum", l->momentum);
  g->cur = out;
  return g->rc;
}

static int emit_flatten(gb *g, const nn_model *m, uint32_t i) {
  return check_in(g, m, i, "flatten");
}

/* The walker's table: a new core layer kind gets one row and one emitter. */
typedef int (*emit_fn)(gb *g, const nn_model *m, uint32_t i);
static const struct {
  nn_layer_type type;
  const char *name;
  emit_fn emit;
} LAYERS[] = {
    {NN_LAYER_DENSE, "dense", emit_dense},       {NN_LAYER_ANTIRECT, "antirectifier", emit_antirect},
    {NN_LAYER_RELU, "relu", emit_relu},          {NN_LAYER_DROPOUT, "dropout", emit_dropout},
    {NN_LAYER_SOFTMAX, "softmax", emit_softmax}, {NN_LAYER_CONV2D, "conv2d", emit_conv},
    {NN_LAYER_MAXPOOL, "max_pool2d", emit_maxpool}, {NN_LAYER_FLATTEN, "flatten", emit_flatten},
    {NN_LAYER_BATCHNORM, "batch_norm", emit_batchnorm},
};
#define N_LAYER_KINDS (sizeof LAYERS / sizeof *LAYERS)

static int walk(gb *g, const nn_model *m) {
  for (uint32_t i = 0; i < m->n_layers && !g->rc; i++) {
    size_t k = 0;
    while (k < N_LAYER_KINDS && LAYERS[k].type != m->layers[i].type) k++;
    if (k == N_LAYER_KINDS) {
      char known[128] = "";
      for (size_t j = 0; j < N_LAYER_KINDS; j++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", j ? ", " : "",
                 LAYERS[j].name);
      return fail(g, -EINVAL,
                  "layer %u of %u has type %d, which the ONNX exporter cannot express "
                  "(it knows %s)",
                  i + 1, m->n_layers, (int)m->layers[i].type, known);
    }
    LAYERS[k].emit(g, m, i);
  }
  if (!g->rc && strcmp(g->cur, "probabilities"))
    return fail(g, -EINVAL, "the model does not end with a softmax layer");
  return g->rc;
}

/* ---------------------------------------------------------------- model */

static const char *const FASHION[NN_CLASSES] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                                "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                                "Bag",         "Ankle boot"};

/* Class names as a JSON array: the model's own (an uploaded set's) when
 * known, else the built-in set's (names hold no characters JSON escapes). */
static char *class_names(gb *g, const srv_onnx_info *in, uint32_t classes) {
  if (in->class_names) {
    cJSON *a = cJSON_Parse(in->class_names);
    int ok = cJSON_IsArray(a) && (uint32_t)cJSON_GetArraySize(a) == classes;
    cJSON_Delete(a);
    if (ok) return pstr(g, "%s", in->class_names);
  }
  const char *dataset = in->dataset;
  int fashion = dataset && !strcmp(dataset, "fashion-mnist") && classes == NN_CLASSES;
  size_t cap = 2 + (size_t)classes * 16;
  char *s = palloc(g, cap);
  if (!s) return NULL;
  size_t n = 0;
  s[n++] = '[';
  for (uint32_t k = 0; k < classes && n < cap; k++) {
    if (fashion)
      n += (size_t)snprintf(s + n, cap - n, "%s\"%s\"", k ? "," : "", FASHION[k]);
    else
      n += (size_t)snprintf(s + n, cap - n, "%s\"%u\"", k ? "," : "", k);
  }
  if (n < cap - 1) s[n++] = ']';
  return s;
}

static void meta(gb *g, Onnx__ModelProto *mp, const char *key, const char *value) {
  if (g->rc || !value) return;
  Onnx__StringStringEntryProto *e = palloc(g, sizeof *e);
  if (!e) return;
  onnx__string_string_entry_proto__init(e);
  e->key = (char *)key;
  e->value = (char *)value;
  mp->metadata_props[mp->n_metadata_props++] = e;
}

#define META_MAX 16

/* The architecture name comes from a model file and may hold any bytes;
 * protobuf strings must be UTF-8, so keep printable ASCII only. */
static const char *arch_name(gb *g, const nn_model *m) {
  char *s = pstr(g, "%s", m->arch);
  for (char *c = s; c && *c; c++)
    if (*c < 0x20 || *c > 0x7e) *c = '_';
  return s;
}

static void add_metadata(gb *g, Onnx__ModelProto *mp, const nn_model *m,
                         const srv_onnx_info *in) {
  mp->metadata_props = palloc(g, META_MAX * sizeof *mp->metadata_props);
  meta(g, mp, "class_names", class_names(g, in, g->width));
  meta(g, mp, "input",
       "image: float32 [N,1,28,28], pixel/255 in [0,1], 0 = background, 1 = ink (white ink on "
       "black, as MNIST); digits centred by mass in a 28x28 field with a 4-pixel margin. "
       "The daemon's preprocessing of drawings and photos is not part of this graph.");
  meta(g, mp, "output", "probabilities: float32 [N,C], softmax over class_names");
  meta(g, mp, "architecture", arch_name(g, m));
  meta(g, mp, "parameters", pstr(g, "%zu", m->n_params));
  if (in->dataset[0]) meta(g, mp, "dataset", in->dataset);
  if (isfinite(in->test_accuracy)) meta(g, mp, "test_accuracy", pstr(g, "%.6f", in->test_accuracy));
  if (isfinite(in->test_loss)) meta(g, mp, "test_loss", pstr(g, "%.6f", in->test_loss));
  if (in->job_config) meta(g, mp, "training_config", in->job_config);
  if (in->model_id) meta(g, mp, "mnistd_model_id", pstr(g, "%lld", (long long)in->model_id));
  if (in->job_id) meta(g, mp, "mnistd_job_id", pstr(g, "%lld", (long long)in->job_id));
}

void srv_onnx_info_init(srv_onnx_info *info) {
  memset(info, 0, sizeof *info);
  info->test_accuracy = NAN;
  info->test_loss = NAN;
}

void srv_onnx_info_clear(srv_onnx_info *info) {
  free(info->job_config);
  free(info->class_names);
  srv_onnx_info_init(info);
}

int srv_onnx_info_set_classes(srv_onnx_info *info, const char *const *names, uint32_t n) {
  free(info->class_names);
  info->class_names = NULL;
  if (!names || !n) return 0;
  cJSON *a = cJSON_CreateStringArray(names, (int)n);
  info->class_names = a ? cJSON_PrintUnformatted(a) : NULL;
  cJSON_Delete(a);
  return info->class_names ? 0 : -ENOMEM;
}

static int find_model(const srv_model_row *m, void *u) {
  srv_onnx_info *in = u;
  if (m->id != in->model_id) return 0;
  snprintf(in->dataset, sizeof in->dataset, "%s", m->dataset ? m->dataset : "");
  in->test_accuracy = m->test_accuracy;
  in->test_loss = m->test_loss;
  in->job_id = m->job_id;
  return 1;
}

/* A walk stops (returning 0) when the callback returns non-zero: the
 * callbacks record what they found in info, and a strdup failure as -1
 * in job_id. */
static int find_job(const srv_job_row *j, void *u) {
  srv_onnx_info *in = u;
  if (j->id != in->job_id) return 0;
  if (j->config_json && !(in->job_config = strdup(j->config_json))) in->job_id = -1;
  return 1;
}

int srv_onnx_info_load(srv_onnx_info *info, srv_store *s, int64_t id) {
  srv_onnx_info_init(info);
  info->model_id = id;
  info->job_id = -1; /* set from the row when found (0 = no job) */
  int rc = srv_store_models_each(s, find_model, info);
  if (!rc && info->job_id < 0) rc = -ENOENT;
  if (!rc && info->job_id > 0) {
    rc = srv_store_jobs_each(s, find_job, info);
    if (!rc && info->job_id < 0) rc = -ENOMEM;
  }
  if (rc) srv_onnx_info_clear(info);
  return rc;
}

/* Builds the whole message tree in g's pool; mp receives the root. */
static int build(gb *g, const nn_model *m, const srv_onnx_info *in, Onnx__ModelProto *mp) {
  g->cap_node = 16 * ((size_t)m->n_layers + 1);
  g->cap_init = 4 * (size_t)m->n_layers + 4; /* batch_norm has 4 */
  g->node = palloc(g, g->cap_node * sizeof *g->node);
  g->init = palloc(g, g->cap_init * sizeof *g->init);
  g->cur = "image";
  g->rank = 4;
  g->chw[0] = 1;
  g->chw[1] = g->chw[2] = NN_IMAGE_SIDE;
  g->width = m->n_inputs;
  if (g->rc) return g->rc;
  if (m->n_inputs != NN_IMAGE_SIZE)
    return fail(g, -EINVAL, "the model takes %u inputs, not a 28x28 image", m->n_inputs);
  if (walk(g, m)) return g->rc;

  Onnx__GraphProto *gr = palloc(g, sizeof *gr);
  Onnx__ValueInfoProto **ins = palloc(g, sizeof *ins), **outs = palloc(g, sizeof *outs);
  Onnx__OperatorSetIdProto *ops = palloc(g, sizeof *ops), **opsv = palloc(g, sizeof *opsv);
  if (g->rc) return g->rc;
  ins[0] = value_info(g, "image", 3, (int64_t[]){1, NN_IMAGE_SIDE, NN_IMAGE_SIDE});
  outs[0] = value_info(g, "probabilities", 1, (int64_t[]){g->width});
  onnx__graph_proto__init(gr);
  gr->name = pstr(g, "mnistd_%s", arch_name(g, m));
  gr->n_node = g->n_node;
  gr->node = g->node;
  gr->n_initializer = g->n_init;
  gr->initializer = g->init;
  gr->n_input = 1;
  gr->input = ins;
  gr->n_output = 1;
  gr->output = outs;
  onnx__operator_set_id_proto__init(ops);
  ops->domain = "";
  ops->has_version = 1;
  ops->version = SRV_ONNX_OPSET;
  opsv[0] = ops;

  mp->has_ir_version = 1;
  mp->ir_version = SRV_ONNX_IR_VERSION;
  mp->n_opset_import = 1;
  mp->opset_import = opsv;
  mp->producer_name = "mnistd";
  mp->producer_version = NN_VERSION;
  mp->domain = "org.mnistd";
  if (in->model_id > 0) {
    mp->has_model_version = 1;
    mp->model_version = in->model_id;
  }
  mp->doc_string = pstr(g, "mnistd %s network%s%s; input 'image' [N,1,28,28] in [0,1] "
                           "(white ink on black), output 'probabilities' [N,%u]",
                        arch_name(g, m), in->dataset[0] ? " trained on " : "", in->dataset,
                        g->width);
  mp->graph = gr;
  add_metadata(g, mp, m, in);
  return g->rc;
}

int srv_onnx_export(const nn_model *m, const srv_onnx_info *info, uint8_t **out, size_t *len,
                    char *msg, size_t msglen) {
  gb g = {.msg = msg, .msglen = msglen};
  srv_onnx_info none;
  if (out) *out = NULL;
  if (len) *len = 0;
  if (msg && msglen) msg[0] = 0;
  if (!m || !m->params || !out || !len) return fail(&g, -EINVAL, "no model or output buffer");
  if (!info) {
    srv_onnx_info_init(&none);
    info = &none;
  }
  Onnx__ModelProto mp;
  onnx__model_proto__init(&mp);
  if (build(&g, m, info, &mp) == 0) {
    size_t n = onnx__model_proto__get_packed_size(&mp);
    uint8_t *buf = n > INT32_MAX ? NULL : malloc(n);
    if (n > INT32_MAX)
      fail(&g, -EFBIG, "the model needs %zu bytes, more than protobuf's 2 GiB limit", n);
    else if (!buf)
      fail(&g, -ENOMEM, "out of memory for a %zu-byte ONNX file", n);
    else if (onnx__model_proto__pack(&mp, buf) != n) {
      free(buf);
      fail(&g, -EINVAL, "internal error: protobuf-c packed a different size");
    } else {
      *out = buf;
      *len = n;
    }
  }
  pool_free(&g);
  return g.rc;
}

int srv_onnx_save(const nn_model *m, const srv_onnx_info *info, const char *path, char *msg,
                  size_t msglen) {
  uint8_t *buf;
  size_t len;
  int rc = srv_onnx_export(m, info, &buf, &len, msg, msglen);
  if (rc) return rc;
  nn_err err = {0};
  rc = nn_file_write_atomic(path, buf, len, &err);
  if (rc && msg && msglen) snprintf(msg, msglen, "%s", err.msg);
  free(buf);
  return rc;
}
