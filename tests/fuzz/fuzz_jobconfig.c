/*
 * fuzz_jobconfig.c — libFuzzer target for the POST /v1/jobs body parser,
 * srv_job_config_parse, and its canonical form srv_job_config_json.
 *
 * The daemon stores the canonical JSON of every job and parses it again on
 * start-up (srv_jobs.c, load_job), so a config that parses must survive the
 * trip: json(parse(body)) must parse, to the very same struct, and print the
 * same JSON again.
 *
 * Also (issue 9) the input as client text through srv_text_clean: bounded,
 * valid UTF-8, no control characters in log mode.
 *
 * Invariants: on failure the code is -EINVAL and msg names the problem; on
 * success every field is inside its documented range, and the round trip
 * above holds.
 */
#include "fuzz_common.h"

#include <math.h>

#include "srv_validate.h"

static void jobcfg_fuzz_check_ranges(const srv_job_config *c, const char *json) {
  const nn_layer_spec *ps;
  uint32_t pn;
  FUZZ_CHECK(strcmp(c->arch, "custom") == 0 || nn_preset_spec(c->arch, &ps, &pn) == 0,
             "arch \"%s\"", c->arch);
  /* Any name an uploaded data set may have (issue 13); whether it exists is
   * the job runner's question, not the parser's. */
  FUZZ_CHECK(srv_dataset_name_ok(c->dataset), "dataset \"%s\"", c->dataset);
  FUZZ_CHECK(c->epochs >= 1 && c->epochs <= SRV_MAX_EPOCHS, "epochs %u", c->epochs);
  FUZZ_CHECK(c->batch_size >= 1 && c->batch_size <= SRV_MAX_BATCH, "batch_size %u",
             c->batch_size);
  FUZZ_CHECK((uint32_t)c->optimizer <= NN_OPT_ADAM, "optimizer %d", (int)c->optimizer);
  FUZZ_CHECK(c->learning_rate > 0.0f && c->learning_rate <= 10.0f,
             "learning_rate %.9g outside (0, 10] (canonical JSON: %s)", (double)c->learning_rate,
             json);
  FUZZ_CHECK(c->momentum >= 0.0f && c->momentum < 1.0f,
             "momentum %.9g outside [0, 1) (canonical JSON: %s)", (double)c->momentum, json);
  FUZZ_CHECK(c->seed <= 9007199254740991ull, "seed %llu", (unsigned long long)c->seed);
  FUZZ_CHECK((unsigned)c->activate <= SRV_ACTIVATE_NEVER, "activate %d", (int)c->activate);
  FUZZ_CHECK(c->train_limit <= 10000000u && c->test_limit <= 10000000u, "limits %u %u",
             c->train_limit, c->test_limit);
}

/* Field by field: the struct may hold padding. */
static int jobcfg_fuzz_equal(const srv_job_config *a, const srv_job_config *b) {
  return strcmp(a->arch, b->arch) == 0 && strcmp(a->dataset, b->dataset) == 0 &&
         a->epochs == b->epochs && a->batch_size == b->batch_size &&
         a->optimizer == b->optimizer &&
         memcmp(&a->learning_rate, &b->learning_rate, sizeof(float)) == 0 &&
         memcmp(&a->momentum, &b->momentum, sizeof(float)) == 0 && a->seed == b->seed &&
         a->activate == b->activate && a->train_limit == b->train_limit &&
         a->test_limit == b->test_limit;
}

/* The same bytes as client text quoted in an error answer or a log line
 * (issue 9): the cleaned copy is bounded, valid UTF-8 (which the prescan
 * accepts) and, for the log, free of control characters. */
static void jobcfg_fuzz_text_clean(const uint8_t *data, size_t size) {
  char out[97], msg[128];
  for (int mode = 0; mode < 2; mode++) {
    size_t n = srv_text_clean(out, sizeof out, (const char *)data, size, mode);
    FUZZ_CHECK(n < sizeof out && strlen(out) == n, "clean: length %zu", n);
    int js = srv_json_prescan(out, n, 1u << 20, msg, sizeof msg);
    FUZZ_CHECK(js == 0 || strstr(msg, "UTF-8") == NULL, "clean output is not UTF-8: %s", msg);
    if (mode == SRV_CLEAN_LOG)
      for (size_t i = 0; i < n; i++)
        FUZZ_CHECK((unsigned char)out[i] >= 0x20 && out[i] != 0x7f, "control byte in log text");
  }
}

int fuzz_jobconfig(const uint8_t *data, size_t size) {
  srv_job_config c;
  char msg[256] = "";
  jobcfg_fuzz_text_clean(data, size);
  int rc = srv_job_config_parse((const char *)data, size, &c, msg, sizeof msg);
  if (rc != 0) {
    FUZZ_CHECK(rc == -EINVAL, "rc = %d", rc);
    FUZZ_CHECK(msg[0] != '\0', "failure without a message");
    return 0;
  }
  char *json = srv_job_config_json(&c);
  FUZZ_CHECK(json != NULL, "srv_job_config_json returned NULL");
  jobcfg_fuzz_check_ranges(&c, json);

  srv_job_config c2;
  char msg2[256] = "";
  rc = srv_job_config_parse(json, strlen(json), &c2, msg2, sizeof msg2);
  FUZZ_CHECK(rc == 0, "canonical JSON %s does not parse: %s", json, msg2);
  FUZZ_CHECK(jobcfg_fuzz_equal(&c, &c2),
             "round trip changed the config: %s -> lr %.9g/%.9g momentum %.9g/%.9g seed "
             "%llu/%llu",
             json, (double)c.learning_rate, (double)c2.learning_rate, (double)c.momentum,
             (double)c2.momentum, (unsigned long long)c.seed, (unsigned long long)c2.seed);
  char *json2 = srv_job_config_json(&c2);
  FUZZ_CHECK(json2 != NULL && strcmp(json, json2) == 0, "canonical JSON not stable: %s vs %s",
             json, fuzz_str(json2));
  free(json2);
  free(json);
  return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_jobconfig(data, size);
}
#endif
