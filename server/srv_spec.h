/* Networks as JSON: the layer spec of the API, the CLI and the page
 * translated to and from the core's nn_layer_spec arrays, plus the
 * augmentation object. Pure functions (no I/O, no globals).
 *
 * A layer is an object with "type" and the fields of that type:
 *   {"type":"dense","units":128,"activation":"relu"}      activation none|relu
 *   {"type":"conv2d","filters":32,"kernel":3,"stride":1,"padding":"valid",
 *    "activation":"relu"}                                 stride 1|2, padding valid|same
 *   {"type":"max_pool2d","size":2,"stride":2}             stride defaults to size
 *   {"type":"flatten"} {"type":"relu"} {"type":"antirectifier"}
 *   {"type":"dropout","rate":0.5}
 *   {"type":"batch_norm","momentum":0.99,"epsilon":0.001}  both optional (Keras' defaults)
 * The last layer must be {"type":"dense","units":10}; the softmax is added. */
#ifndef MNISTD_SRV_SPEC_H
#define MNISTD_SRV_SPEC_H

#include <cJSON.h>
#include <stddef.h>

#include "nn.h"

/* Parses a JSON array of layers into out[NN_MAX_SPECS], *n layers. Returns
 * 0, or -EINVAL with msg naming the layer: "layers[1] conv2d: unknown field
 * \"size\" (allowed: ...)". Shapes are not checked here: nn_spec_check. */
int srv_spec_from_json(const cJSON *layers, nn_layer_spec *out, uint32_t *n, char *msg,
                       size_t msglen);

/* Parses a document holding a spec: {"layers":[...]} or a bare [...]
 * (for `mnistd train --layers FILE`), then checks shapes for 28x28x1
 * inputs and `batch`. Returns 0 or -EINVAL / -E2BIG with msg. */
int srv_spec_parse_text(const char *text, size_t len, uint32_t batch, nn_layer_spec *out,
                        uint32_t *n, char *msg, size_t msglen);

/* The spec as a JSON array (only each type's own fields). NULL when out of
 * memory. The caller owns it. */
cJSON *srv_spec_to_json(const nn_layer_spec *s, uint32_t n);

/* {"shift":2,"rotate":10,"scale":0.1} (any subset) into *a; -EINVAL with
 * msg naming the field and its range. */
int srv_augment_from_json(const cJSON *o, nn_augment *a, char *msg, size_t msglen);
/* "shift=2,rotate=10,scale=0.1" (the CLI form, any subset). */
int srv_augment_parse_text(const char *s, nn_augment *a, char *msg, size_t msglen);
cJSON *srv_augment_to_json(const nn_augment *a);

/* GET /v1/architectures: {"architectures":[{"name","parameters","layers"}]}
 * for every preset, the default first, and "layer_types":[{"type","fields"}]:
 * every type a custom spec may use with the fields it takes. */
cJSON *srv_architectures_json(void);

/* POST /v1/architectures/validate: body {"layers":[...], "batch_size":N
 * (optional, default 128)}. Returns {"valid":true,"parameters":N} or
 * {"valid":false,"message":"...","layer":i} (layer -1 when the message
 * names none). *status: 200, or 400 when the body is not such an object
 * (the reply is then NULL and msg says why). */
cJSON *srv_spec_validate(const char *body, size_t len, int *status, char *msg, size_t msglen);

#endif
