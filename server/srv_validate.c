/* Request bodies to structs. cJSON rejects NaN/Infinity literals and limits
 * nesting (CJSON_NESTING_LIMIT), so hostile JSON ends up here as a parse
 * error, never as a crash. */
#include "srv_validate.h"
#include "srv_spec.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_job_config_defaults(srv_job_config *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->arch, sizeof c->arch, "antirectifier");
  const nn_layer_spec *ps;
  if (!nn_preset_spec(c->arch, &ps, &c->n_layers))
    memcpy(c->layers, ps, c->n_layers * sizeof *ps);
  snprintf(c->dataset, sizeof c->dataset, "mnist");
  c->epochs = 4;
  c->batch_size = 128;
  c->optimizer = NN_OPT_RMSPROP;
  c->learning_rate = 0.001f;
  c->seed = 1;
  c->activate = SRV_ACTIVATE_IF_BETTER;
}

static int fail(char *msg, size_t len, const char *fmt, const char *a) {
  snprintf(msg, len, fmt, a);
  return -EINVAL;
}

/* An integer-valued JSON number in [lo, hi]. */
static int get_uint(const cJSON *v, double lo, double hi, double *out) {
  if (!cJSON_IsNumber(v)) return -1;
  double d = v->valuedouble;
  if (!isfinite(d) || d != floor(d) || d < lo || d > hi) return -1;
  *out = d;
  return 0;
}

/* ---------------------------------------------------------------- text */

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 when the
 * bytes there are not one (overlong forms, surrogates, > U+10FFFF and cut
 * sequences included). */
static size_t utf8_seq(const unsigned char *p, size_t n) {
  if (p[0] < 0x80) return 1;
  size_t k;
  unsigned lo = 0x80, hi = 0xBF;
  if (p[0] >= 0xC2 && p[0] <= 0xDF) k = 2;
  else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
    k = 3;
    if (p[0] == 0xE0) lo = 0xA0;
    if (p[0] == 0xED) hi = 0x9F;
  } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
    k = 4;
    if (p[0] == 0xF0) lo = 0x90;
    if (p[0] == 0xF4) hi = 0x8F;
  } else
    return 0;
  if (n < k || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < k; i++)
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  return k;
}

size_t srv_text_clean(char *dst, size_t dstlen, const char *src, size_t srclen, int mode) {
  if (!dstlen) return 0;
  const unsigned char *p = (const unsigned char *)(src ? src : "");
  size_t o = 0;
  for (size_t i = 0; i < srclen && p[i];) {
    char rep[8];
    const char *out = (const char *)p + i;
    size_t k = utf8_seq(p + i, srclen - i), w = k;
    if (k == 1 && mode == SRV_CLEAN_LOG && (p[i] < 0x20 || p[i] == 0x7f || p[i] == '\\')) {
      if (p[i] == '\\') snprintf(rep, sizeof rep, "\\\\");
      else snprintf(rep, sizeof rep, "\\x%02x", p[i]);
      out = rep, w = strlen(rep);
    } else if (k == 0) {
      /* A byte that starts no valid character: U+FFFD in JSON text, its
       * value in the log. */
      if (mode == SRV_CLEAN_LOG) snprintf(rep, sizeof rep, "\\x%02x", p[i]);
      else snprintf(rep, sizeof rep, "\xEF\xBF\xBD");
      out = rep, w = strlen(rep), k = 1;
    }
    if (o + w + 1 > dstlen) break; /* clipped on a character boundary */
    memcpy(dst + o, out, w);
    o += w;
    i += k;
  }
  dst[o] = 0;
  return o;
}

int srv_json_prescan(const char *body, size_t len, size_t max_values, char *msg,
                     size_t msglen) {
  const unsigned char *p = (const unsigned char *)body;
  size_t values = 1;
  int in_str = 0, in_num = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = p[i];
    if (ch >= 0x80) {
      size_t k = utf8_seq(p + i, len - i);
      if (!k) {
        snprintf(msg, msglen, "the body is not valid UTF-8 (byte %zu)", i);
        return -EINVAL;
      }
      i += k - 1;
      in_num = 0;
      continue;
    }
    if (in_str) {
      if (ch == '"') in_str = 0;
      else if (ch == '\\' && i + 1 < len && p[i + 1] < 0x80) {
        /* Skip the escaped byte (an escaped '"' does not end the string).
         * A non-ASCII byte after '\\' is a bad escape cJSON reports; it is
         * not skipped so the UTF-8 check stays in step. */
        if (p[i + 1] == 'u' && i + 5 < len && !memcmp(p + i + 2, "0000", 4)) {
          snprintf(msg, msglen, "strings must not contain NUL (\\u0000 at byte %zu)", i);
          return -EINVAL;
        }
        i++;
      } else if (ch == 0) {
        snprintf(msg, msglen, "strings must not contain NUL (byte %zu)", i);
        return -EINVAL;
      }
      continue;
    }
    if (ch == '"') {
      in_str = 1;
      in_num = 0;
    } else if ((ch >= '0' && ch <= '9') || ch == '-') {
      if (!in_num) {
        size_t d = ch == '-' ? i + 1 : i;
        if (d + 1 < len && p[d] == '0' && p[d + 1] >= '0' && p[d + 1] <= '9') {
          snprintf(msg, msglen, "numbers must not have leading zeros (byte %zu)", d);
          return -EINVAL;
        }
      }
      in_num = 1;
    } else if (ch == '.' || ch == 'e' || ch == 'E' || ch == '+') {
      /* inside a number (or a syntax error cJSON reports) */
    } else {
      in_num = 0;
      if (ch == ',' || ch == '[' || ch == '{') values++;
    }
    if (values > max_values) {
      snprintf(msg, msglen, "the body holds more than %zu JSON values, more than this "
               "endpoint can accept", max_values);
      return -E2BIG;
    }
  }
  return 0;
}

static int is_exact_int(double d) { return d == floor(d) && fabs(d) < 1.8446744073709552e19; }

void srv_json_exact_ints(cJSON *node) {
  for (; node; node = node->next) {
    if (cJSON_IsNumber(node) && fabs(node->valuedouble) >= 1e15 &&
        is_exact_int(node->valuedouble)) {
      /* cJSON prints "%1.15g" unless that reads back "close enough":
       * 9007199254740991 would come out as 9.00719925474099e+15. */
      char buf[32];
      snprintf(buf, sizeof buf, "%.0f", node->valuedouble);
      char *raw = strdup(buf);
      if (raw) {
        node->type = cJSON_Raw | (node->type & cJSON_StringIsConst);
        node->valuestring = raw;
      }
    }
    if (node->child) srv_json_exact_ints(node->child);
  }
}

static cJSON *parse_object(const char *body, size_t len, size_t max_values, char *msg,
                           size_t msglen, int *rc) {
  *rc = -EINVAL;
  if (len == 0) return cJSON_CreateObject();
  int pre = srv_json_prescan(body, len, max_values, msg, msglen);
  if (pre) {
    *rc = pre;
    return NULL;
  }
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
  if (!root) {
    size_t at = end && end >= body ? (size_t)(end - body) : 0;
    snprintf(msg, msglen, "the body is not valid JSON (error near byte %zu)", at);
    return NULL;
  }
  /* Only whitespace may follow the value. */
  for (const char *p = end; p && p < body + len; p++)
    if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
      snprintf(msg, msglen, "unexpected data after the JSON value at byte %zu",
               (size_t)(p - body));
      cJSON_Delete(root);
      return NULL;
    }
  if (!cJSON_IsObject(root)) {
    snprintf(msg, msglen, "the body must be a JSON object");
    cJSON_Delete(root);
    return NULL;
  }
  return root;
}

static int parse_optimizer(const cJSON *o, srv_job_config *c, int *lr_set, char *msg,
                           size_t msglen) {
  if (cJSON_IsString(o)) {
    if (nn_opt_parse(o->valuestring, &c->optimizer))
      return fail(msg, msglen, "optimizer must be \"rmsprop\", \"sgd\" or \"adam\", not \"%.40s\"",
                  o->valuestring);
    return 0;
  }
  if (!cJSON_IsObject(o))
    return fail(msg, msglen, "%s must be an object like {\"name\":\"rmsprop\",\"learning_rate\":0.001}",
                "optimizer");
  const cJSON *f;
  cJSON_ArrayForEach(f, o) {
    if (!strcmp(f->string, "name")) {
      if (!cJSON_IsString(f) || nn_opt_parse(f->valuestring, &c->optimizer))
        return fail(msg, msglen, "%s must be \"rmsprop\", \"sgd\" or \"adam\"", "optimizer.name");
    } else if (!strcmp(f->string, "learning_rate")) {
      if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble) || f->valuedouble <= 0 ||
          f->valuedouble > 10)
        return fail(msg, msglen, "%s must be a number in (0, 10]", "optimizer.learning_rate");
      c->learning_rate = (float)f->valuedouble;
      if (!(c->learning_rate > 0.0f))
        return fail(msg, msglen, "%s must be a number in (0, 10]", "optimizer.learning_rate");
      *lr_set = 1;
    } else if (!strcmp(f->string, "momentum")) {
      if (!cJSON_IsNumber(f) || !(f->valuedouble >= 0 && f->valuedouble < 1))
        return fail(msg, msglen, "%s must be a number in [0, 1)", "optimizer.momentum");
      c->momentum = (float)f->valuedouble;
      if (!(c->momentum < 1.0f))
        return fail(msg, msglen, "%s must be a number in [0, 1)", "optimizer.momentum");
    } else {
      return fail(msg, msglen,
                  "unknown field optimizer.%.40s (allowed: name, learning_rate, momentum)",
                  f->string);
    }
  }
  return 0;
}

/* The network of a parsed config: a preset's spec, or the layers given,
 * which must then match the preset named beside them (a config read back
 * from its own JSON has both). Shapes and limits checked for the batch. */
static int resolve_network(srv_job_config *c, int arch_set, int layers_set, char *msg,
                           size_t msglen) {
  const nn_layer_spec *ps = NULL;
  uint32_t pn = 0;
  int preset = !nn_preset_spec(c->arch, &ps, &pn);
  if (!layers_set) c->n_layers = 0; /* the default's spec: arch decides */
  if (!c->n_layers) {
    if (!preset)
      return fail(msg, msglen, "%s needs \"layers\": the network, as a list of layers", "arch custom");
    memcpy(c->layers, ps, pn * sizeof *ps);
    c->n_layers = pn;
  } else if (!arch_set) {
    snprintf(c->arch, sizeof c->arch, "custom");
  } else if (preset && (pn != c->n_layers || memcmp(ps, c->layers, pn * sizeof *ps))) {
    snprintf(msg, msglen,
             "layers differ from the %s preset: leave \"arch\" out (or say \"custom\") to "
             "train your own network",
             c->arch);
    return -EINVAL;
  }
  /* An uploaded set's class count is known only where the set is looked
   * up (h_job_create checks the output width there); here, its last layer
   * is taken as it is. */
  uint32_t k = 0;
  const nn_layer_spec *last = &c->layers[c->n_layers - 1];
  if (!srv_dataset_is_builtin(c->dataset) && last->type == NN_LAYER_DENSE) k = last->units;
  nn_err err;
  int rc = nn_spec_check(c->layers, c->n_layers, NN_INPUT_MNIST,
                         srv_spec_classes(c->layers, c->n_layers, k), c->batch_size, 1, NULL, &err);
  if (rc) {
    snprintf(msg, msglen, "%s", err.msg);
    return -EINVAL;
  }
  return 0;
}

int srv_job_config_parse(const char *body, size_t len, srv_job_config *c, char *msg,
                         size_t msglen) {
  srv_job_config_defaults(c);
  int prc;
  cJSON *root = parse_object(body, len, SRV_JOB_MAX_VALUES, msg, msglen, &prc);
  if (!root) return prc;
  int rc = 0, lr_set = 0, arch_set = 0, layers_set = 0;
  const cJSON *f;
  double d;
  cJSON_ArrayForEach(f, root) {
    const char *k = f->string;
    if (!strcmp(k, "arch")) {
      const nn_layer_spec *ps;
      uint32_t pn;
      if (!cJSON_IsString(f) || (strcmp(f->valuestring, "custom") &&
                                 nn_preset_spec(f->valuestring, &ps, &pn))) {
        rc = fail(msg, msglen, "%s must be \"antirectifier\", \"relu\", \"cnn\" or \"custom\" "
                  "(with \"layers\")", "arch");
        break;
      }
      snprintf(c->arch, sizeof c->arch, "%s", f->valuestring);
      arch_set = 1;
    } else if (!strcmp(k, "layers")) {
      if ((rc = srv_spec_from_json(f, c->layers, &c->n_layers, msg, msglen))) break;
      layers_set = 1;
    } else if (!strcmp(k, "augment")) {
      if ((rc = srv_augment_from_json(f, &c->augment, msg, msglen))) break;
    } else if (!strcmp(k, "dataset")) {
      if (!cJSON_IsString(f) || !srv_dataset_name_ok(f->valuestring)) {
        rc = fail(msg, msglen, "%s must be \"mnist\", \"fashion-mnist\" or the name of an "
                  "uploaded data set (see GET /v1/datasets)", "dataset");
        break;
      }
      snprintf(c->dataset, sizeof c->dataset, "%s", f->valuestring);
    } else if (!strcmp(k, "epochs")) {
      if (get_uint(f, 1, SRV_MAX_EPOCHS, &d)) {
        rc = fail(msg, msglen, "%s must be an integer from 1 to 1000", "epochs");
        break;
      }
      c->epochs = (uint32_t)d;
    } else if (!strcmp(k, "batch_size")) {
      if (get_uint(f, 1, SRV_MAX_BATCH, &d)) {
        rc = fail(msg, msglen, "%s must be an integer from 1 to 4096", "batch_size");
        break;
      }
      c->batch_size = (uint32_t)d;
    } else if (!strcmp(k, "seed")) {
      if (get_uint(f, 0, 9007199254740991.0, &d)) {
        rc = fail(msg, msglen, "%s must be a non-negative integer", "seed");
        break;
      }
      c->seed = (uint64_t)d;
    } else if (!strcmp(k, "train_limit") || !strcmp(k, "test_limit")) {
      if (cJSON_IsNull(f)) continue;
      if (get_uint(f, 1, 10000000, &d)) {
        rc = fail(msg, msglen, "%s must be a positive integer (a number of images) or null", k);
        break;
      }
      *(k[1] == 'r' ? &c->train_limit : &c->test_limit) = (uint32_t)d;
    } else if (!strcmp(k, "activate")) {
      if (!cJSON_IsString(f)) {
        rc = fail(msg, msglen, "%s must be \"if_better\", \"always\" or \"never\"", "activate");
        break;
      }
      if (!strcmp(f->valuestring, "if_better")) c->activate = SRV_ACTIVATE_IF_BETTER;
      else if (!strcmp(f->valuestring, "always")) c->activate = SRV_ACTIVATE_ALWAYS;
      else if (!strcmp(f->valuestring, "never")) c->activate = SRV_ACTIVATE_NEVER;
      else {
        rc = fail(msg, msglen, "%s must be \"if_better\", \"always\" or \"never\"", "activate");
        break;
      }
    } else if (!strcmp(k, "optimizer")) {
      nn_opt_kind before = c->optimizer;
      if ((rc = parse_optimizer(f, c, &lr_set, msg, msglen))) break;
      (void)before;
    } else {
      rc = fail(msg, msglen,
                "unknown field \"%.40s\" (allowed: arch, layers, augment, dataset, epochs, "
                "batch_size, optimizer, seed, activate, train_limit, test_limit)",
                k);
      break;
    }
  }
  if (!rc) rc = resolve_network(c, arch_set, layers_set, msg, msglen);
  if (!rc && c->optimizer != NN_OPT_SGD) c->momentum = 0;
  if (!rc && !lr_set) {
    nn_opt_config o;
    nn_opt_defaults(&o, c->optimizer);
    c->learning_rate = o.lr;
  }
  cJSON_Delete(root);
  return rc;
}

static const char *activate_name(srv_activate a) {
  return a == SRV_ACTIVATE_ALWAYS ? "always" : a == SRV_ACTIVATE_NEVER ? "never" : "if_better";
}

char *srv_job_config_json(const srv_job_config *c) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddStringToObject(o, "arch", c->arch);
  cJSON_AddItemToObject(o, "layers", srv_spec_to_json(c->layers, c->n_layers));
  if (c->augment.shift > 0.f || c->augment.rotate > 0.f || c->augment.scale > 0.f)
    cJSON_AddItemToObject(o, "augment", srv_augment_to_json(&c->augment));
  cJSON_AddStringToObject(o, "dataset", c->dataset);
  cJSON_AddNumberToObject(o, "epochs", c->epochs);
  cJSON_AddNumberToObject(o, "batch_size", c->batch_size);
  cJSON *opt = cJSON_AddObjectToObject(o, "optimizer");
  if (opt) {
    cJSON_AddStringToObject(opt, "name", nn_opt_name(c->optimizer));
    /* Printed through float so 0.001f shows as 0.001. */
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
      snprintf(buf, sizeof buf, "%.*g", prec, (double)c->learning_rate);
      if ((float)strtod(buf, NULL) == c->learning_rate) break;
    }
    cJSON_AddNumberToObject(opt, "learning_rate", strtod(buf, NULL));
    if (c->optimizer == NN_OPT_SGD) cJSON_AddNumberToObject(opt, "momentum", c->momentum);
  }
  char seed[24];
  snprintf(seed, sizeof seed, "%llu", (unsigned long long)c->seed);
  cJSON_AddRawToObject(o, "seed", seed);
  cJSON_AddStringToObject(o, "activate", activate_name(c->activate));
  if (c->train_limit) cJSON_AddNumberToObject(o, "train_limit", c->train_limit);
  else cJSON_AddNullToObject(o, "train_limit");
  if (c->test_limit) cJSON_AddNumberToObject(o, "test_limit", c->test_limit);
  else cJSON_AddNullToObject(o, "test_limit");
  char *s = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return s;
}

/* Fills 784 bytes from an array of numbers in [0, 255]. */
static int image_from_array(const cJSON *a, uint8_t *out, const char *what, char *msg,
                            size_t msglen) {
  if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != NN_IMAGE_SIZE)
    return fail(msg, msglen, "%s must be an array of 784 numbers from 0 to 255 (28x28, row by row)",
                what);
  int i = 0;
  const cJSON *v;
  cJSON_ArrayForEach(v, a) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 255)) {
      snprintf(msg, msglen, "%.40s[%d] must be a number from 0 to 255", what, i);
      return -EINVAL;
    }
    out[i++] = (uint8_t)lround(v->valuedouble);
  }
  return 0;
}

int srv_predict_json_parse(const char *body, size_t len, uint8_t **pixels, uint32_t *n,
                           char *msg, size_t msglen) {
  *pixels = NULL;
  *n = 0;
  int prc;
  cJSON *root = parse_object(body, len, SRV_PREDICT_MAX_VALUES, msg, msglen, &prc);
  if (!root) return prc;
  int rc = 0;
  const cJSON *img = NULL, *imgs = NULL, *f;
  cJSON_ArrayForEach(f, root) {
    if (!strcmp(f->string, "image")) img = f;
    else if (!strcmp(f->string, "images")) imgs = f;
    else {
      rc = fail(msg, msglen, "unknown field \"%.40s\" (send \"image\" or \"images\")", f->string);
      goto out;
    }
  }
  if (!!img == !!imgs) {
    rc = fail(msg, msglen, "%s", "send either \"image\": [784 numbers] or \"images\": [[784 numbers], ...]");
    goto out;
  }
  uint32_t count = 1;
  if (imgs) {
    if (!cJSON_IsArray(imgs) || cJSON_GetArraySize(imgs) < 1) {
      rc = fail(msg, msglen, "%s must be a non-empty array of images", "images");
      goto out;
    }
    if (cJSON_GetArraySize(imgs) > SRV_MAX_PREDICT_IMAGES) {
      snprintf(msg, msglen, "images holds %d images; at most %d per request",
               cJSON_GetArraySize(imgs), SRV_MAX_PREDICT_IMAGES);
      rc = -E2BIG;
      goto out;
    }
    count = (uint32_t)cJSON_GetArraySize(imgs);
  }
  uint8_t *px = malloc((size_t)count * NN_IMAGE_SIZE);
  if (!px) {
    rc = -ENOMEM;
    goto out;
  }
  if (img) {
    rc = image_from_array(img, px, "image", msg, msglen);
  } else {
    uint32_t i = 0;
    char what[32];
    cJSON_ArrayForEach(f, imgs) {
      snprintf(what, sizeof what, "images[%u]", i);
      if ((rc = image_from_array(f, px + (size_t)i * NN_IMAGE_SIZE, what, msg, msglen))) break;
      i++;
    }
  }
  if (rc) {
    free(px);
    goto out;
  }
  *pixels = px;
  *n = count;
out:
  cJSON_Delete(root);
  return rc;
}

/* One TF-Serving instance: 784 numbers or 28 arrays of 28, in [0, 1]. */
static int tfs_instance(const cJSON *a, float *out, uint32_t idx, char *msg, size_t msglen) {
  int size = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
  const cJSON *v;
  int i = 0;
  if (size == NN_IMAGE_SIZE) {
    cJSON_ArrayForEach(v, a) {
      if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 1)) goto bad;
      out[i++] = (float)v->valuedouble;
    }
    return 0;
  }
  if (size == NN_IMAGE_SIDE) {
    const cJSON *row;
    cJSON_ArrayForEach(row, a) {
      if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != NN_IMAGE_SIDE) goto bad;
      cJSON_ArrayForEach(v, row) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 1)) goto bad;
        out[i++] = (float)v->valuedouble;
      }
    }
    return 0;
  }
bad:
  snprintf(msg, msglen,
           "instances[%u] must be 784 numbers or 28 rows of 28 numbers, each from 0 to 1", idx);
  return -EINVAL;
}

int srv_tfs_parse(const char *body, size_t len, float **x, uint32_t *n, char *msg,
                  size_t msglen) {
  *x = NULL;
  *n = 0;
  int prc;
  cJSON *root = parse_object(body, len, SRV_TFS_MAX_VALUES, msg, msglen, &prc);
  if (!root) return prc;
  int rc = 0;
  const cJSON *inst = NULL, *f;
  cJSON_ArrayForEach(f, root) {
    if (!strcmp(f->string, "instances")) inst = f;
    else if (strcmp(f->string, "signature_name")) {
      rc = fail(msg, msglen, "unknown field \"%.40s\" (send \"instances\")", f->string);
      goto out;
    }
  }
  if (!inst || !cJSON_IsArray(inst) || cJSON_GetArraySize(inst) < 1) {
    rc = fail(msg, msglen, "%s must be a non-empty array", "instances");
    goto out;
  }
  int count = cJSON_GetArraySize(inst);
  if (count > SRV_MAX_PREDICT_IMAGES) {
    snprintf(msg, msglen, "instances holds %d images; at most %d per request", count,
             SRV_MAX_PREDICT_IMAGES);
    rc = -E2BIG;
    goto out;
  }
  float *buf = malloc((size_t)count * NN_IMAGE_SIZE * sizeof(float));
  if (!buf) {
    rc = -ENOMEM;
    goto out;
  }
  uint32_t i = 0;
  cJSON_ArrayForEach(f, inst) {
    if ((rc = tfs_instance(f, buf + (size_t)i * NN_IMAGE_SIZE, i, msg, msglen))) break;
    i++;
  }
  if (rc) {
    free(buf);
    goto out;
  }
  *x = buf;
  *n = (uint32_t)count;
out:
  cJSON_Delete(root);
  return rc;
}

int srv_dataset_is_builtin(const char *name) {
  return !strcmp(name, "mnist") || !strcmp(name, "fashion-mnist");
}

int srv_dataset_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             (i > 0 && (c == '.' || c == '_' || c == '-'));
    if (!ok) return 0;
  }
  return 1;
}
