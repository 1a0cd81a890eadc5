/* JSON <-> layer specs (see srv_spec.h). */
#include "srv_spec.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Which fields each type takes: the rest are refused by name. */
static const char *allowed(nn_layer_type t) {
  switch (t) {
  case NN_LAYER_DENSE: return "type, units, activation";
  case NN_LAYER_CONV2D: return "type, filters, kernel, stride, padding, activation";
  case NN_LAYER_MAXPOOL: return "type, size, stride";
  case NN_LAYER_DROPOUT: return "type, rate";
  case NN_LAYER_BATCHNORM: return "type, momentum, epsilon";
  default: return "type";
  }
}

/* Whether `k` is one whole name of the ", "-separated list: compared token by
 * token, so neither a part of a name ("ype") nor the empty key matches. */
static int field_ok(nn_layer_type t, const char *k) {
  size_t n = strlen(k);
  for (const char *p = allowed(t); *p;) {
    size_t len = strcspn(p, ",");
    if (len == n && n > 0 && memcmp(p, k, n) == 0) return 1;
    p += len;
    while (*p == ',' || *p == ' ') p++;
  }
  return 0;
}

static int uint_field(const cJSON *v, uint32_t lo, uint32_t hi, uint32_t *out) {
  if (!cJSON_IsNumber(v)) return -1;
  double d = v->valuedouble;
  if (!isfinite(d) || d != floor(d) || d < lo || d > hi) return -1;
  *out = (uint32_t)d;
  return 0;
}

#define LFAIL(...) (snprintf(msg, msglen, __VA_ARGS__), -EINVAL)

static int layer_from_json(const cJSON *o, uint32_t i, nn_layer_spec *s, char *msg,
                           size_t msglen) {
  memset(s, 0, sizeof *s);
  if (!cJSON_IsObject(o)) return LFAIL("layers[%u]: each layer must be an object", i);
  const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
  if (!cJSON_IsString(ty) || nn_layer_type_parse(ty->valuestring, &s->type) ||
      s->type == NN_LAYER_SOFTMAX)
    return LFAIL("layers[%u]: \"type\" must be one of dense, conv2d, max_pool2d, flatten, "
                 "dropout, relu, antirectifier, batch_norm",
                 i);
  const char *tn = ty->valuestring;
  const cJSON *f;
  cJSON_ArrayForEach(f, o) {
    const char *k = f->string;
    if (!field_ok(s->type, k))
      return LFAIL("layers[%u] %s: unknown field \"%.40s\" (allowed: %s)", i, tn, k,
                   allowed(s->type));
    if (!strcmp(k, "type")) continue;
    if (!strcmp(k, "units")) {
      if (uint_field(f, 1, NN_MAX_WIDTH, &s->units))
        return LFAIL("layers[%u] %s: units must be an integer from 1 to %u", i, tn, NN_MAX_WIDTH);
    } else if (!strcmp(k, "filters")) {
      if (uint_field(f, 1, NN_MAX_FILTERS, &s->filters))
        return LFAIL("layers[%u] %s: filters must be an integer from 1 to %u", i, tn,
                     NN_MAX_FILTERS);
    } else if (!strcmp(k, "kernel") || !strcmp(k, "size")) {
      if (uint_field(f, 1, 32, &s->kernel))
        return LFAIL("layers[%u] %s: %s must be an integer from 1 to 32", i, tn, k);
    } else if (!strcmp(k, "stride")) {
      if (uint_field(f, 1, 32, &s->stride))
        return LFAIL("layers[%u] %s: stride must be a positive integer", i, tn);
    } else if (!strcmp(k, "padding")) {
      if (cJSON_IsString(f) && !strcmp(f->valuestring, "valid")) s->padding = NN_PAD_VALID;
      else if (cJSON_IsString(f) && !strcmp(f->valuestring, "same")) s->padding = NN_PAD_SAME;
      else return LFAIL("layers[%u] %s: padding must be \"valid\" or \"same\"", i, tn);
    } else if (!strcmp(k, "activation")) {
      if (cJSON_IsString(f) && !strcmp(f->valuestring, "relu")) s->activation = NN_ACT_RELU;
      else if (cJSON_IsNull(f) || (cJSON_IsString(f) && (!strcmp(f->valuestring, "none") ||
                                                         !strcmp(f->valuestring, "linear"))))
        s->activation = NN_ACT_NONE;
      else return LFAIL("layers[%u] %s: activation must be \"relu\" or \"none\"", i, tn);
    } else if (!strcmp(k, "rate")) {
      if (!cJSON_IsNumber(f) || !(f->valuedouble >= 0 && f->valuedouble < 1) ||
          !((float)f->valuedouble < 1.0f))
        return LFAIL("layers[%u] %s: rate must be a number in [0, 1)", i, tn);
      s->rate = (float)f->valuedouble;
    } else if (!strcmp(k, "momentum")) {
      if (!cJSON_IsNumber(f) || !(f->valuedouble >= 0 && f->valuedouble < 1) ||
          !((float)f->valuedouble < 1.0f))
        return LFAIL("layers[%u] %s: momentum must be a number in [0, 1) (Keras: 0.99)", i, tn);
      s->momentum = (float)f->valuedouble;
    } else if (!strcmp(k, "epsilon")) {
      if (!cJSON_IsNumber(f) || !(f->valuedouble <= 1) || !((float)f->valuedouble > 0.0f))
        return LFAIL("layers[%u] %s: epsilon must be a number in (0, 1] (Keras: 0.001)", i, tn);
      s->epsilon = (float)f->valuedouble;
    }
  }
  /* Required fields and the defaults, spelled out so that a spec read back
   * from its own JSON is the same struct. */
  if (s->type == NN_LAYER_DENSE && !s->units)
    return LFAIL("layers[%u] %s: \"units\" is required", i, tn);
  if (s->type == NN_LAYER_CONV2D) {
    if (!s->filters) return LFAIL("layers[%u] %s: \"filters\" is required", i, tn);
    if (!s->kernel) return LFAIL("layers[%u] %s: \"kernel\" is required", i, tn);
    if (!s->stride) s->stride = 1;
  }
  if (s->type == NN_LAYER_MAXPOOL) {
    if (!s->kernel) return LFAIL("layers[%u] %s: \"size\" is required", i, tn);
    if (!s->stride) s->stride = s->kernel;
  }
  if (s->type == NN_LAYER_DROPOUT && !cJSON_GetObjectItemCaseSensitive(o, "rate"))
    return LFAIL("layers[%u] %s: \"rate\" is required", i, tn);
  if (s->type == NN_LAYER_BATCHNORM) {
    if (!cJSON_GetObjectItemCaseSensitive(o, "momentum")) s->momentum = NN_BN_MOMENTUM;
    if (!cJSON_GetObjectItemCaseSensitive(o, "epsilon")) s->epsilon = NN_BN_EPSILON;
  }
  return 0;
}

int srv_spec_from_json(const cJSON *layers, nn_layer_spec *out, uint32_t *n, char *msg,
                       size_t msglen) {
  if (!cJSON_IsArray(layers)) return LFAIL("layers must be an array of layer objects");
  int count = cJSON_GetArraySize(layers);
  if (count < 1) return LFAIL("layers must hold at least one layer (the last: dense, 10 units)");
  if (count > NN_MAX_SPECS)
    return LFAIL("layers has %d layers, more than the limit of %d", count, NN_MAX_SPECS);
  uint32_t i = 0;
  const cJSON *o;
  cJSON_ArrayForEach(o, layers) {
    int rc = layer_from_json(o, i, &out[i], msg, msglen);
    if (rc) return rc;
    i++;
  }
  *n = i;
  return 0;
}

int srv_spec_parse_text(const char *text, size_t len, uint32_t batch, nn_layer_spec *out,
                        uint32_t *n, char *msg, size_t msglen) {
  cJSON *root = cJSON_ParseWithLength(text, len);
  if (!root) return LFAIL("not valid JSON");
  const cJSON *arr = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "layers") : root;
  int rc = srv_spec_from_json(arr, out, n, msg, msglen);
  cJSON_Delete(root);
  if (rc) return rc;
  nn_err err;
  rc = nn_spec_check(out, *n, NN_INPUT_MNIST, NN_CLASSES, batch, 1, NULL, &err);
  if (rc) {
    snprintf(msg, msglen, "%s", err.msg);
    return rc == NN_ETOOBIG ? -E2BIG : -EINVAL;
  }
  return 0;
}

cJSON *srv_spec_to_json(const nn_layer_spec *s, uint32_t n) {
  cJSON *a = cJSON_CreateArray();
  for (uint32_t i = 0; a && i < n; i++) {
    cJSON *o = cJSON_CreateObject();
    if (!o) break;
    cJSON_AddItemToArray(a, o);
    cJSON_AddStringToObject(o, "type", nn_layer_type_name(s[i].type));
    switch (s[i].type) {
    case NN_LAYER_DENSE:
      cJSON_AddNumberToObject(o, "units", s[i].units);
      if (s[i].activation == NN_ACT_RELU) cJSON_AddStringToObject(o, "activation", "relu");
      break;
    case NN_LAYER_CONV2D:
      cJSON_AddNumberToObject(o, "filters", s[i].filters);
      cJSON_AddNumberToObject(o, "kernel", s[i].kernel);
      cJSON_AddNumberToObject(o, "stride", s[i].stride ? s[i].stride : 1);
      cJSON_AddStringToObject(o, "padding", s[i].padding == NN_PAD_SAME ? "same" : "valid");
      cJSON_AddStringToObject(o, "activation", s[i].activation == NN_ACT_RELU ? "relu" : "none");
      break;
    case NN_LAYER_MAXPOOL:
      cJSON_AddNumberToObject(o, "size", s[i].kernel);
      cJSON_AddNumberToObject(o, "stride", s[i].stride ? s[i].stride : s[i].kernel);
      break;
    case NN_LAYER_DROPOUT: {
      /* Through float, so 0.1f reads 0.1. */
      char buf[32];
      snprintf(buf, sizeof buf, "%.7g", (double)s[i].rate);
      cJSON_AddNumberToObject(o, "rate", strtod(buf, NULL));
      break;
    }
    case NN_LAYER_BATCHNORM: {
      char buf[32];
      snprintf(buf, sizeof buf, "%.7g", (double)s[i].momentum);
      cJSON_AddNumberToObject(o, "momentum", strtod(buf, NULL));
      snprintf(buf, sizeof buf, "%.7g", (double)s[i].epsilon);
      cJSON_AddNumberToObject(o, "epsilon", strtod(buf, NULL));
      break;
    }
    default:
      break;
    }
  }
  return a;
}

static int aug_field(const char *k, double v, nn_augment *a, char *msg, size_t msglen) {
  if (!strcmp(k, "shift")) {
    if (!(v >= 0 && v <= 8)) return LFAIL("augment.shift must be a number of pixels from 0 to 8");
    a->shift = (float)v;
  } else if (!strcmp(k, "rotate")) {
    if (!(v >= 0 && v <= 180)) return LFAIL("augment.rotate must be degrees from 0 to 180");
    a->rotate = (float)v;
  } else if (!strcmp(k, "scale")) {
    if (!(v >= 0 && v <= 0.5)) return LFAIL("augment.scale must be a fraction from 0 to 0.5");
    a->scale = (float)v;
  } else {
    return LFAIL("unknown field augment.%.40s (allowed: shift, rotate, scale)", k);
  }
  return 0;
}

int srv_augment_from_json(const cJSON *o, nn_augment *a, char *msg, size_t msglen) {
  memset(a, 0, sizeof *a);
  if (cJSON_IsNull(o)) return 0;
  if (!cJSON_IsObject(o))
    return LFAIL("augment must be an object like {\"shift\":2,\"rotate\":10,\"scale\":0.1}");
  const cJSON *f;
  cJSON_ArrayForEach(f, o) {
    if (!cJSON_IsNumber(f)) {
      int rc = aug_field(f->string, NAN, a, msg, msglen);
      return rc ? rc : LFAIL("augment.%.40s must be a number", f->string);
    }
    int rc = aug_field(f->string, f->valuedouble, a, msg, msglen);
    if (rc) return rc;
  }
  return 0;
}

int srv_augment_parse_text(const char *s, nn_augment *a, char *msg, size_t msglen) {
  memset(a, 0, sizeof *a);
  char buf[128];
  snprintf(buf, sizeof buf, "%s", s);
  char *save = NULL;
  for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '='), *end;
    if (!eq) return LFAIL("--augment takes shift=N,rotate=DEG,scale=F, not '%.40s'", tok);
    *eq = 0;
    double v = strtod(eq + 1, &end);
    if (end == eq + 1 || *end) return LFAIL("--augment: '%.40s' is not a number", eq + 1);
    int rc = aug_field(tok, v, a, msg, msglen);
    if (rc) return rc;
  }
  return 0;
}

cJSON *srv_augment_to_json(const nn_augment *a) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  char buf[32];
  const struct { const char *k; float v; } f[] = {
      {"shift", a->shift}, {"rotate", a->rotate}, {"scale", a->scale}};
  for (int i = 0; i < 3; i++) {
    snprintf(buf, sizeof buf, "%.7g", (double)f[i].v);
    cJSON_AddNumberToObject(o, f[i].k, strtod(buf, NULL));
  }
  return o;
}

cJSON *srv_architectures_json(void) {
  cJSON *d = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(d, "architectures");
  const char *name;
  for (uint32_t i = 0; a && (name = nn_preset_name(i)); i++) {
    const nn_layer_spec *s;
    uint32_t n;
    size_t np = 0;
    if (nn_preset_spec(name, &s, &n) ||
        nn_spec_check(s, n, NN_INPUT_MNIST, NN_CLASSES, 0, 1, &np, NULL))
      continue;
    cJSON *o = cJSON_CreateObject();
    if (!o) break;
    cJSON_AddItemToArray(a, o);
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddBoolToObject(o, "default", i == 0);
    cJSON_AddNumberToObject(o, "parameters", (double)np);
    cJSON_AddItemToObject(o, "layers", srv_spec_to_json(s, n));
  }
  /* What a custom spec may use: each type with its fields. */
  cJSON *types = cJSON_AddArrayToObject(d, "layer_types");
  static const nn_layer_type T[] = {NN_LAYER_DENSE,   NN_LAYER_CONV2D, NN_LAYER_MAXPOOL,
                                    NN_LAYER_FLATTEN, NN_LAYER_DROPOUT, NN_LAYER_RELU,
                                    NN_LAYER_ANTIRECT, NN_LAYER_BATCHNORM};
  for (size_t i = 0; types && i < sizeof T / sizeof *T; i++) {
    cJSON *o = cJSON_CreateObject();
    if (!o) break;
    cJSON_AddItemToArray(types, o);
    cJSON_AddStringToObject(o, "type", nn_layer_type_name(T[i]));
    cJSON_AddStringToObject(o, "fields", allowed(T[i]));
  }
  return d;
}

cJSON *srv_spec_validate(const char *body, size_t len, int *status, char *msg, size_t msglen) {
  *status = 400;
  /* A spec of 64 layers is a few KiB: a cap keeps a hostile body from
   * becoming millions of cJSON nodes. */
  if (len > 65536) {
    snprintf(msg, msglen, "a layer spec is at most 65536 bytes, this body has %zu", len);
    return NULL;
  }
  cJSON *root = cJSON_ParseWithLength(body, len);
  if (!root || !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    snprintf(msg, msglen, "send {\"layers\":[...]} as JSON");
    return NULL;
  }
  uint32_t batch = 128;
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "batch_size");
  if (b && uint_field(b, 1, 4096, &batch)) {
    cJSON_Delete(root);
    snprintf(msg, msglen, "batch_size must be an integer from 1 to 4096");
    return NULL;
  }
  nn_layer_spec spec[NN_MAX_SPECS];
  uint32_t n = 0;
  size_t np = 0;
  char why[512];
  int rc = srv_spec_from_json(cJSON_GetObjectItemCaseSensitive(root, "layers"), spec, &n, why,
                              sizeof why);
  cJSON_Delete(root);
  if (!rc) {
    nn_err err;
    rc = nn_spec_check(spec, n, NN_INPUT_MNIST, NN_CLASSES, batch, 1, &np, &err);
    if (rc) snprintf(why, sizeof why, "%s", err.msg);
  }
  cJSON *d = cJSON_CreateObject();
  if (!d) {
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  *status = 200;
  cJSON_AddBoolToObject(d, "valid", rc == 0);
  if (!rc) {
    cJSON_AddNumberToObject(d, "parameters", (double)np);
    return d;
  }
  unsigned layer;
  cJSON_AddStringToObject(d, "message", why);
  cJSON_AddNumberToObject(d, "layer", sscanf(why, "layers[%u]", &layer) == 1 ? (double)layer : -1);
  return d;
}
