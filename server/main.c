/* mnistd: one binary, several commands. */
#include <stdio.h>
#include <string.h>

#include "nn.h"
#include "srv.h"
#include "srv_cli.h"

static const char HELP[] =
    "mnistd " NN_VERSION " — MNIST training and inference daemon\n"
    "usage: mnistd [COMMAND] [options]\n"
    "commands:\n"
    "  serve     run the daemon (the default; 'mnistd serve --help')\n"
    "  healthcheck  exit 0 if the daemon answers /healthz (for containers)\n"
    "  train     train a network and print per-epoch metrics ('mnistd train --help')\n"
    "  predict   classify images with a saved model ('mnistd predict --help')\n"
    "  export    write a model as ONNX ('mnistd export --help')\n"
    "  --help    this text\n"
    "  --version print the version\n";

/* The one place that knows exit statuses: 0 success, 2 a usage error,
 * 1 any other failure. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Runs the command argv names (*cmd gets its name): 0, SRV_EUSAGE or a
 * negative errno, with the reason in err. */
static int run(int argc, char **argv, const char **cmd, srv_err *err) {
  *cmd = "serve";
  if (argc < 2) return srv_serve_main(argc, argv, err);
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    fputs(HELP, stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    nn_backend_info bi;
    nn_backend_info_get(&bi);
    printf("mnistd %s\nkernels: %s, isa %s, matmul %s\n", NN_VERSION, bi.library, bi.isa,
           bi.kernel);
    return 0;
  }
  if (argv[1][0] == '-') return srv_serve_main(argc, argv, err); /* flags of serve */
  *cmd = argv[1];
  if (!strcmp(argv[1], "serve")) return srv_serve_main(argc - 1, argv + 1, err);
  if (!strcmp(argv[1], "healthcheck")) return srv_healthcheck_main(argc - 1, argv + 1, err);
  if (!strcmp(argv[1], "train")) return srv_cli_train(argc - 1, argv + 1, err);
  if (!strcmp(argv[1], "predict")) return srv_cli_predict(argc - 1, argv + 1, err);
  if (!strcmp(argv[1], "export")) return srv_cli_export(argc - 1, argv + 1, err);
  *cmd = NULL;
  return SRV_EUSAGE;
}

int main(int argc, char **argv) {
  srv_err err = {0};
  const char *cmd;
  int rc = run(argc, argv, &cmd, &err);
  if (rc && !cmd)
    fprintf(stderr, "mnistd: unknown command '%s' (see 'mnistd --help')\n", argv[1]);
  else if (rc && err.message[0])
    /* One line: what failed, and for a usage error where to look. */
    fprintf(stderr, "mnistd %s: %s%s%s%s\n", cmd, err.message,
            rc == SRV_EUSAGE ? " (see 'mnistd " : "", rc == SRV_EUSAGE ? cmd : "",
            rc == SRV_EUSAGE ? " --help')" : "");
  return rc == 0 ? EXIT_OK : rc == SRV_EUSAGE ? EXIT_USAGE : EXIT_FAIL;
}
