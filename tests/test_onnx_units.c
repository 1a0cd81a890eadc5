/* Unit tests of the ONNX exporter (server/srv_onnx.c): the graph each preset
 * becomes, read back with the same generated protobuf-c code; weights
 * carried bit for bit; metadata; refusal of layer kinds and shapes it
 * cannot express; records looked up in the store. Numerical agreement with
 * a real runtime is tests/system/test_onnx.sh's job. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn.h"
#include "onnx.pb-c.h"
#include "srv_onnx.h"
#include "srv_store.h"

static Onnx__ModelProto *export_unpack(const nn_model *m, const srv_onnx_info *info) {
  uint8_t *buf = NULL;
  size_t len = 0;
  char msg[256];
  assert_int_equal(srv_onnx_export(m, info, &buf, &len, msg, sizeof msg), 0);
  assert_non_null(buf);
  Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
  free(buf);
  assert_non_null(mp);
  return mp;
}

static const char *meta(const Onnx__ModelProto *mp, const char *key) {
  for (size_t i = 0; i < mp->n_metadata_props; i++)
    if (!strcmp(mp->metadata_props[i]->key, key)) return mp->metadata_props[i]->value;
  return NULL;
}

static const Onnx__TensorProto *init(const Onnx__GraphProto *g, const char *name) {
  for (size_t i = 0; i < g->n_initializer; i++)
    if (!strcmp(g->initializer[i]->name, name)) return g->initializer[i];
  return NULL;
}

/* Op types of the graph joined by spaces. */
static void ops(const Onnx__GraphProto *g, char *buf, size_t len) {
  buf[0] = 0;
  for (size_t i = 0; i < g->n_node; i++)
    snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", i ? " " : "", g->node[i]->op_type);
}

static void test_antirectifier_graph(void **state) {
  (void)state;
  nn_model *m;
  assert_int_equal(nn_model_create_preset(&m, "antirectifier"), 0);
  nn_model_init(m, 7);
  srv_onnx_info info;
  srv_onnx_info_init(&info);
  snprintf(info.dataset, sizeof info.dataset, "mnist");
  info.test_accuracy = 0.98125;
  info.model_id = 12;
  info.job_id = 3;
  info.job_config = strdup("{\"arch\":\"antirectifier\",\"seed\":18446744073709551615}");
  Onnx__ModelProto *mp = export_unpack(m, &info);
  srv_onnx_info_clear(&info);

  assert_int_equal(mp->ir_version, SRV_ONNX_IR_VERSION);
  assert_int_equal(mp->n_opset_import, 1);
  assert_string_equal(mp->opset_import[0]->domain, "");
  assert_int_equal(mp->opset_import[0]->version, SRV_ONNX_OPSET);
  assert_string_equal(mp->producer_name, "mnistd");
  assert_string_equal(mp->producer_version, NN_VERSION);
  const Onnx__GraphProto *g = mp->graph;
  char buf[1024];
  ops(g, buf, sizeof buf);
  static const char anti[] = "ReduceMean Sub Mul ReduceSum Max Sqrt Div Relu Neg Relu Concat";
  char want[1024];
  snprintf(want, sizeof want, "Flatten Gemm %s Gemm %s Gemm Softmax", anti, anti);
  assert_string_equal(buf, want); /* the dropouts vanish */
  assert_string_equal(g->input[0]->name, "image");
  assert_string_equal(g->output[0]->name, "probabilities");
  const Onnx__TensorShapeProto *in = g->input[0]->type->tensor_type->shape;
  assert_int_equal(in->n_dim, 4);
  assert_string_equal(in->dim[0]->dim_param, "N");
  assert_int_equal(in->dim[2]->dim_value, 28);

  /* Weights bit for bit, [out][in] as Gemm(transB=1) reads them. */
  const Onnx__TensorProto *w = init(g, "layer3.dense.W"), *b = init(g, "layer6.dense.b");
  assert_non_null(w);
  assert_non_null(b);
  assert_int_equal(w->dims[0], 256);
  assert_int_equal(w->dims[1], 512);
  assert_int_equal(w->n_float_data, 256 * 512);
  assert_memory_equal(w->float_data, m->params + m->layers[3].w_off, 256 * 512 * sizeof(float));
  assert_memory_equal(b->float_data, m->params + m->layers[6].b_off, 10 * sizeof(float));
  const Onnx__TensorProto *eps = init(g, "const.l2_epsilon");
  assert_non_null(eps);
  assert_int_equal(eps->n_dims, 0);
  assert_true(eps->float_data[0] == 1e-12f);

  assert_string_equal(meta(mp, "class_names"), "[\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]");
  assert_string_equal(meta(mp, "dataset"), "mnist");
  assert_string_equal(meta(mp, "test_accuracy"), "0.981250");
  assert_null(meta(mp, "test_loss")); /* NAN: unknown, left out */
  assert_string_equal(meta(mp, "training_config"),
                      "{\"arch\":\"antirectifier\",\"seed\":18446744073709551615}");
  assert_string_equal(meta(mp, "mnistd_model_id"), "12");
  assert_string_equal(meta(mp, "mnistd_job_id"), "3");
  assert_string_equal(meta(mp, "parameters"), "337418");
  onnx__model_proto__free_unpacked(mp, NULL);
  nn_model_free(m);
}

static void test_relu_graph_fashion_names(void **state) {
  (void)state;
  nn_model *m;
  assert_int_equal(nn_model_create_preset(&m, "relu"), 0);
  nn_model_init(m, 1);
  srv_onnx_info info;
  srv_onnx_info_init(&info);
  snprintf(info.dataset, sizeof info.dataset, "fashion-mnist");
  Onnx__ModelProto *mp = export_unpack(m, &info);
  char buf[256];
  ops(mp->graph, buf, sizeof buf);
  assert_string_equal(buf, "Flatten Gemm Relu Gemm Relu Gemm Softmax");
  assert_string_equal(meta(mp, "class_names"),
                      "[\"T-shirt/top\",\"Trouser\",\"Pullover\",\"Dress\",\"Coat\",\"Sandal\","
                      "\"Shirt\",\"Sneaker\",\"Bag\",\"Ankle boot\"]");
  assert_null(meta(mp, "training_config"));
  assert_null(meta(mp, "mnistd_model_id"));
  assert_false(mp->has_model_version);
  onnx__model_proto__free_unpacked(mp, NULL);
  /* No info at all is fine too; an architecture name from a file that is
   * not printable ASCII is made so (protobuf strings are UTF-8). */
  snprintf(m->arch, sizeof m->arch, "relu\xff\n");
  mp = export_unpack(m, NULL);
  assert_null(meta(mp, "dataset"));
  assert_non_null(meta(mp, "class_names"));
  assert_string_equal(meta(mp, "architecture"), "relu__");
  assert_string_equal(mp->graph->name, "mnistd_relu__");
  onnx__model_proto__free_unpacked(mp, NULL);
  nn_model_free(m);
}

/* A layer kind the exporter has no mapping for (as a future core layer
 * would be until srv_onnx.c learns it) is refused, naming the layer. */
/* Known defect K8: a model trained on an uploaded set was exported with
 * "0".."C-1" as its class names; the set's names (any text, JSON-escaped)
 * are what the metadata carries now, and a count that does not fit the
 * output layer falls back to the old names. */
static void test_uploaded_class_names(void **state) {
  (void)state;
  nn_model *m;
  assert_int_equal(nn_model_create_preset_classes(&m, "antirectifier", 3), 0);
  nn_model_init(m, 3);
  srv_onnx_info info;
  srv_onnx_info_init(&info);
  snprintf(info.dataset, sizeof info.dataset, "shapes");
  const char *names[3] = {"circle", "say \"hi\"", "\xc3\xa9toile"};
  assert_int_equal(srv_onnx_info_set_classes(&info, names, 3), 0);
  Onnx__ModelProto *mp = export_unpack(m, &info);
  assert_string_equal(meta(mp, "class_names"), "[\"circle\",\"say \\\"hi\\\"\",\"\xc3\xa9toile\"]");
  onnx__model_proto__free_unpacked(mp, NULL);
  assert_int_equal(srv_onnx_info_set_classes(&info, names, 2), 0); /* does not fit: 0..2 */
  mp = export_unpack(m, &info);
  assert_string_equal(meta(mp, "class_names"), "[\"0\",\"1\",\"2\"]");
  onnx__model_proto__free_unpacked(mp, NULL);
  srv_onnx_info_clear(&info);
  assert_null(info.class_names);
  nn_model_free(m);
}

/* batch_norm: one BatchNormalization on the moving statistics, on the
 * feature map as it is (per channel, axis 1) and on a flattened vector. */
static void test_batchnorm_graph(void **state) {
  (void)state;
  nn_layer_spec s[] = {
      {.type = NN_LAYER_CONV2D, .filters = 4, .kernel = 3, .stride = 1, .activation = NN_ACT_RELU},
      {.type = NN_LAYER_BATCHNORM, .momentum = 0.9f, .epsilon = 0.01f},
      {.type = NN_LAYER_MAXPOOL, .kernel = 2, .stride = 2},
      {.type = NN_LAYER_FLATTEN},
      {.type = NN_LAYER_BATCHNORM, .momentum = NN_BN_MOMENTUM, .epsilon = NN_BN_EPSILON},
      {.type = NN_LAYER_DENSE, .units = 10}};
  nn_model *m;
  assert_int_equal(nn_model_create_spec(&m, "custom", NN_INPUT_MNIST, s, 6, NULL), 0);
  nn_model_init(m, 3);
  for (size_t i = 0; i < m->n_params; i++) m->params[i] += 0.01f * (float)(i % 7);
  Onnx__ModelProto *mp = export_unpack(m, NULL);
  const Onnx__GraphProto *g = mp->graph;
  char buf[1024];
  ops(g, buf, sizeof buf);
  assert_string_equal(buf, "Conv Relu BatchNormalization MaxPool Transpose Flatten "
                           "BatchNormalization Gemm Softmax");
  const Onnx__NodeProto *bn = g->node[2];
  assert_int_equal(bn->n_input, 5);
  assert_string_equal(bn->input[3], "layer2.batch_norm.moving_mean");
  int eps = 0;
  for (size_t i = 0; i < bn->n_attribute; i++)
    if (!strcmp(bn->attribute[i]->name, "epsilon")) eps = bn->attribute[i]->f == 0.01f;
  assert_true(eps);
  const nn_layer *l = &m->layers[2];
  static const char *const part[4] = {"gamma", "beta", "moving_mean", "moving_variance"};
  for (int k = 0; k < 4; k++) {
    char name[64];
    snprintf(name, sizeof name, "layer2.batch_norm.%s", part[k]);
    const Onnx__TensorProto *t = init(g, name);
    assert_non_null(t);
    assert_int_equal(t->dims[0], 4);
    assert_memory_equal(t->float_data, m->params + l->w_off + 4 * k, 4 * sizeof(float));
  }
  const Onnx__TensorProto *v = init(g, "layer5.batch_norm.moving_variance");
  assert_non_null(v);
  assert_int_equal(v->dims[0], 13 * 13 * 4);
  onnx__model_proto__free_unpacked(mp, NULL);
  nn_model_free(m);
}

static void test_unknown_layer_refused(void **state) {
  (void)state;
  nn_model *m;
  assert_int_equal(nn_model_create_preset(&m, "relu"), 0);
  m->layers[2].type = (nn_layer_type)42;
  uint8_t *buf = (uint8_t *)&buf;
  size_t len = 99;
  char msg[256];
  assert_int_equal(srv_onnx_export(m, NULL, &buf, &len, msg, sizeof msg), -EINVAL);
  assert_null(buf);
  assert_int_equal(len, 0);
  assert_non_null(strstr(msg, "layer 3 of 8 has type 42"));
  assert_non_null(strstr(msg, "dense, antirectifier, relu, dropout, softmax"));
  nn_model_free(m);
}

static void test_bad_shapes_refused(void **state) {
  (void)state;
  nn_model *m;
  uint8_t *buf;
  size_t len;
  char msg[256];
  assert_int_equal(nn_model_create_preset(&m, "antirectifier"), 0);
  m->layers[3].in = 256; /* the antirectifier before it gives 512 */
  assert_int_equal(srv_onnx_export(m, NULL, &buf, &len, msg, sizeof msg), -EINVAL);
  assert_non_null(strstr(msg, "layer 4 (dense) expects 256 inputs per sample but receives 512"));
  m->layers[3].in = 512;
  m->layers[6].b_off = m->n_params; /* weights outside the block */
  assert_int_equal(srv_onnx_export(m, NULL, &buf, &len, msg, sizeof msg), -EINVAL);
  assert_non_null(strstr(msg, "outside the parameter block"));
  nn_model_free(m);

  static const nn_layer_spec small[] = {{.type = NN_LAYER_DENSE, .units = 10, .rate = 0}, {.type = NN_LAYER_SOFTMAX, .units = 0, .rate = 0}};
  assert_int_equal(nn_model_create(&m, "custom", 100, small, 2), 0);
  assert_int_equal(srv_onnx_export(m, NULL, &buf, &len, msg, sizeof msg), -EINVAL);
  assert_non_null(strstr(msg, "100 inputs"));
  assert_int_equal(srv_onnx_export(NULL, NULL, &buf, &len, msg, sizeof msg), -EINVAL);
  assert_int_equal(srv_onnx_export(m, NULL, NULL, &len, NULL, 0), -EINVAL);
  nn_model_free(m);
}

static void test_save_atomic_and_errors(void **state) {
  (void)state;
  char dir[] = "/tmp/mnistd-onnx-XXXXXX", path[128], msg[512];
  assert_non_null(mkdtemp(dir));
  nn_model *m;
  assert_int_equal(nn_model_create_preset(&m, "relu"), 0);
  snprintf(path, sizeof path, "%s/m.onnx", dir);
  assert_int_equal(srv_onnx_save(m, NULL, path, msg, sizeof msg), 0);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  assert_true(ftell(f) > 669706 * 4); /* every weight, as floats */
  fclose(f);
  snprintf(path, sizeof path, "%s/no/such/dir/m.onnx", dir);
  assert_true(srv_onnx_save(m, NULL, path, msg, sizeof msg) < 0);
  assert_non_null(strstr(msg, "no/such/dir/m.onnx"));
  snprintf(path, sizeof path, "%s/m.onnx", dir);
  unlink(path);
  rmdir(dir);
  nn_model_free(m);
}

static void test_info_from_store(void **state) {
  (void)state;
  char dir[] = "/tmp/mnistd-onnx-XXXXXX", msg[256];
  assert_non_null(mkdtemp(dir));
  srv_store *s;
  assert_int_equal(srv_store_open(&s, dir, msg, sizeof msg), 0);
  const char *cfg = "{\"arch\":\"relu\",\"dataset\":\"fashion-mnist\",\"seed\":18446744073709551615}";
  int64_t job, model;
  assert_int_equal(srv_store_job_insert(s, cfg, 1000, &job), 0);
  srv_job_row jr = {job, "succeeded", cfg, 1000, 2000, 3000, 0, NULL};
  srv_model_row mr = {0, "relu", "fashion-mnist", 669706, 0.8525, 0.41, job, 3000};
  assert_int_equal(srv_store_model_insert(s, &mr, &jr, NULL, 0, 0, &model), 0);
  int64_t orphan;
  srv_model_row mr2 = {0, "antirectifier", "mnist", 337418, 0.97, 0.1, 0, 4000};
  assert_int_equal(srv_store_model_insert(s, &mr2, NULL, NULL, 0, 0, &orphan), 0);

  srv_onnx_info info;
  assert_int_equal(srv_onnx_info_load(&info, s, model), 0);
  assert_string_equal(info.dataset, "fashion-mnist");
  assert_true(fabs(info.test_accuracy - 0.8525) < 1e-12);
  assert_int_equal(info.job_id, job);
  assert_int_equal(info.model_id, model);
  assert_string_equal(info.job_config, cfg); /* as recorded: the u64 seed intact */
  srv_onnx_info_clear(&info);
  assert_null(info.job_config);

  assert_int_equal(srv_onnx_info_load(&info, s, orphan), 0); /* no job: no config */
  assert_int_equal(info.job_id, 0);
  assert_null(info.job_config);
  assert_string_equal(info.dataset, "mnist");
  srv_onnx_info_clear(&info);

  assert_int_equal(srv_onnx_info_load(&info, s, 999), -ENOENT);
  assert_null(info.job_config);
  assert_true(isnan(info.test_accuracy));
  srv_store_close(s);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_antirectifier_graph),
      cmocka_unit_test(test_batchnorm_graph),
      cmocka_unit_test(test_relu_graph_fashion_names),
      cmocka_unit_test(test_uploaded_class_names),
      cmocka_unit_test(test_unknown_layer_refused),
      cmocka_unit_test(test_bad_shapes_refused),
      cmocka_unit_test(test_save_atomic_and_errors),
      cmocka_unit_test(test_info_from_store),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
