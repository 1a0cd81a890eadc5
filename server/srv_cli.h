/* Command-line front ends of mnistd: `train`, `predict` and `export`. Each
 * returns 0 (also after --help), SRV_EUSAGE after a one-line usage error on
 * stderr, or a negative errno after a one-line message on stderr; main.c
 * maps these to exit statuses (srv_util.h). */
#ifndef MNISTD_SRV_CLI_H
#define MNISTD_SRV_CLI_H

#include <stddef.h>

#include "srv_util.h" /* the number parsers and srv_dataset_dir, once here */

/* `mnistd train [options]`: trains in the foreground, one line per epoch. */
int srv_cli_train(int argc, char **argv);
/* `mnistd predict --model FILE IMAGE...`: prints each image's digit. */
int srv_cli_predict(int argc, char **argv);
/* `mnistd export --format onnx MODEL OUT` (server/srv_export.c). */
int srv_cli_export(int argc, char **argv);

#endif
