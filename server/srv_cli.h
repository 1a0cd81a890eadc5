/* Command-line front ends of mnistd: `train`, `predict` and `export`. Each returns
 * the process exit status: 0 on success, 1 on a runtime failure, 2 on a
 * usage error (after a one-line message on stderr). */
#ifndef MNISTD_SRV_CLI_H
#define MNISTD_SRV_CLI_H

#include <stddef.h>

#include "srv_util.h" /* the number parsers and srv_dataset_dir, once here */

#define SRV_EXIT_OK 0
#define SRV_EXIT_FAIL 1
#define SRV_EXIT_USAGE 2

/* `mnistd train [options]`: trains in the foreground, one line per epoch. */
int srv_cli_train(int argc, char **argv);
/* `mnistd predict --model FILE IMAGE...`: prints each image's digit. */
int srv_cli_predict(int argc, char **argv);
/* `mnistd export --format onnx MODEL OUT` (server/srv_export.c). */
int srv_cli_export(int argc, char **argv);

#endif
