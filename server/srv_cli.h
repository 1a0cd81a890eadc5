/* Command-line front ends of mnistd: `train`, `predict` and `export`. Each
 * returns 0 (also after --help), SRV_EUSAGE for a command line it does not
 * take, or a negative errno; on failure err->message says why in one line
 * (main.c prints it after "mnistd COMMAND: " and maps the return to the
 * exit status, srv_util.h). Results go to stdout. */
#ifndef MNISTD_SRV_CLI_H
#define MNISTD_SRV_CLI_H

#include <stddef.h>

#include "srv_util.h" /* the number parsers and srv_dataset_dir, once here */

/* `mnistd train [options]`: trains in the foreground, one line per epoch. */
int srv_cli_train(int argc, char **argv, srv_err *err);
/* `mnistd predict --model FILE IMAGE...`: prints each image's digit. */
int srv_cli_predict(int argc, char **argv, srv_err *err);
/* `mnistd export --format onnx MODEL OUT` (server/srv_export.c). */
int srv_cli_export(int argc, char **argv, srv_err *err);

#endif
