/* The usage example at the top of core/nn.h, compiled from the header's own
 * text (the Makefile extracts it into $(BUILD)/gen/nn_example.c) and run on
 * real MNIST: if the API changes under it, this stops building or fails. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "nn_example.c"

static void test_nn_h_example(void **state) {
  (void)state;
  const char *data = getenv("MNISTD_DATA");
  char dir[4096], path[] = "/tmp/nn-example-XXXXXX";
  snprintf(dir, sizeof dir, "%s/mnist", data ? data : "data");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  float acc = 0;
  int label = -1;
  assert_int_equal(example(dir, path, &acc, &label), 0);
  printf("accuracy %.4f, label %d\n", acc, label);
  assert_true(acc > 0.80f);       /* 10,000 images, one epoch, one thread: 0.8349 */
  assert_int_equal(label, 7);     /* the first MNIST test image is a 7 */
  nn_model *m = NULL;
  assert_int_equal(nn_model_load(&m, path, NULL), 0);
  nn_model_free(m);
  unlink(path);
  /* Failure path: everything freed (ASan/memcheck check that), the code and
   * message come back. */
  assert_int_equal(example("/nonexistent", path, &acc, &label), NN_ENOENT);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_nn_h_example)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
