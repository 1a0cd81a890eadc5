/* srv_onnx: writes a trained model as an ONNX file, so that it runs in any
 * ONNX runtime (onnxruntime in a browser, on a phone, on another server)
 * without this daemon.
 *
 * The exported graph:
 *   input  "image"          float32 [N,1,28,28], pixels in [0,1] with
 *                           0 = background and 1 = ink (white ink on black,
 *                           as in MNIST). The daemon's preprocessing of
 *                           drawings and photos (inversion, cropping,
 *                           centring by mass, srv_image.h) is NOT part of
 *                           the graph: callers feed MNIST-style images.
 *   output "probabilities"  float32 [N,C], softmax over the C classes.
 * Opset 13, IR version 8 (ONNX 1.10+, any onnxruntime since 1.10).
 * metadata_props carry the class names (a JSON array), the data set, the
 * architecture, the test accuracy and loss and the training job's
 * configuration (JSON) when known; producer_name is "mnistd".
 *
 * Each layer kind of the core model maps to standard operators (table in
 * srv_onnx.c): dense -> Gemm, relu -> Relu, dropout -> nothing (inference),
 * antirectifier -> ReduceMean, Sub, Mul, ReduceSum, Max, Sqrt, Div, Relu,
 * Neg, Concat (Keras l2_normalize: x / sqrt(max(sum(x^2), 1e-12))),
 * conv2d -> Conv, max_pool2d -> MaxPool, flatten -> Transpose + Flatten,
 * batch_norm -> BatchNormalization (inference: the moving statistics),
 * softmax -> Softmax. A layer kind without a mapping is refused, with a
 * message naming the layer.
 *
 * This lives in the server, not in the core: it is a serialisation format
 * with a third-party dependency (protobuf-c), and the metadata it writes
 * (data set, training job) are the daemon's records, not the core's. */
#ifndef MNISTD_SRV_ONNX_H
#define MNISTD_SRV_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "nn.h"
#include "srv_store.h"

#define SRV_ONNX_OPSET 13
#define SRV_ONNX_IR_VERSION 8

/* What the daemon knows about a model beyond its weights. Every field is
 * optional: empty strings, NAN numbers and zero ids are left out of the
 * metadata. */
typedef struct srv_onnx_info {
  char dataset[32];         /* "mnist" or "fashion-mnist": picks the class names
                               (anything else: "0".."9") */
  char *job_config;         /* the training job's configuration (JSON, as
                               recorded), malloc'd; srv_onnx_info_clear frees it */
  double test_accuracy;     /* on the data set's test split */
  double test_loss;
  int64_t model_id, job_id;
  char *class_names;        /* JSON array of the model's class names (an uploaded
                               set's), malloc'd; NULL: from dataset as above */
} srv_onnx_info;

/* Sets info's class names (the model's, index = output); NULL or n = 0
 * clears them. 0 or -ENOMEM. */
int srv_onnx_info_set_classes(srv_onnx_info *info, const char *const *names, uint32_t n);

/* Fills info with "nothing known". */
void srv_onnx_info_init(srv_onnx_info *info);
/* Frees job_config and class_names and re-initialises. */
void srv_onnx_info_clear(srv_onnx_info *info);

/* Fills info from the daemon's records of model `id` in the store (its
 * data set, test accuracy and loss, and its job's configuration exactly
 * as recorded). Returns 0, -ENOENT for an unknown model, -EIO (see
 * srv_store_errmsg) or -ENOMEM; on failure info is left initialised. The
 * HTTP route and `mnistd export --state-dir` both use this, so they write
 * the same file. */
int srv_onnx_info_load(srv_onnx_info *info, srv_store *s, int64_t id);

/* Serialises m (with info, which may be NULL) as an ONNX ModelProto. On
 * success *out is a malloc'd buffer of *len bytes that the caller frees,
 * and 0 is returned. On failure *out is NULL, nothing is leaked, msg (if
 * not NULL) receives a sentence, and the return is -EINVAL (a layer kind
 * or shape the exporter cannot express; the message names the layer),
 * -ENOMEM, or -EFBIG (the file would pass protobuf's 2 GiB limit). */
int srv_onnx_export(const nn_model *m, const srv_onnx_info *info, uint8_t **out,
                    size_t *len, char *msg, size_t msglen);

/* srv_onnx_export, then writes the bytes to path atomically (temp file
 * beside it, fsync, rename, fsync of the directory). Same returns, plus
 * -EIO/-ENOSPC for the write (msg names the file). */
int srv_onnx_save(const nn_model *m, const srv_onnx_info *info, const char *path, char *msg,
                  size_t msglen);

#endif
