/*
 * fuzz_common.h — helpers shared by the libFuzzer harnesses in tests/fuzz/.
 *
 * Every harness defines `int fuzz_<name>(const uint8_t *, size_t)` and, unless
 * FUZZ_NO_ENTRY is defined, an LLVMFuzzerTestOneInput that calls it. The
 * regression test (tests/test_fuzz_regressions.c) defines FUZZ_NO_ENTRY and
 * #includes every harness, so the same checks run under cmocka, gcc and the
 * normal/ASan test builds. Hence: everything here is `static inline` and
 * include-guarded, and each harness prefixes its own statics with its name.
 */
#ifndef MNISTD_FUZZ_COMMON_H
#define MNISTD_FUZZ_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

/* A broken invariant is a bug even when nothing crashed: report and abort,
 * which libFuzzer records as a crash (and cmocka's runner as a failure). */
#define FUZZ_CHECK(cond, ...)                                                 \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__,   \
              #cond);                                                         \
      fprintf(stderr, __VA_ARGS__);                                           \
      fputc('\n', stderr);                                                    \
      abort();                                                                \
    }                                                                         \
  } while (0)

#if defined(__GNUC__)
#define FUZZ_UNUSED __attribute__((unused))
#else
#define FUZZ_UNUSED
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---------------------------------------------------------------- files
 * The IDX and checkpoint readers take a path. Each process keeps one
 * in-memory file (memfd, reopened through /proc/self/fd/N, so every open()
 * gets its own offset like a real file), falling back to one /tmp file per
 * process where memfd or /proc is unavailable. */

typedef struct fuzz_file {
  int fd;
  int is_tmp;
  char path[64];
} fuzz_file;

static fuzz_file fuzz_file_state FUZZ_UNUSED = {-1, 0, ""};

static inline void fuzz_file_cleanup(void) {
  if (fuzz_file_state.is_tmp) unlink(fuzz_file_state.path);
}

static inline int fuzz_file_open(void) {
  fuzz_file *f = &fuzz_file_state;
  if (f->fd >= 0) return 0;
#ifdef MFD_CLOEXEC
  int fd = memfd_create("mnistd-fuzz", MFD_CLOEXEC);
  if (fd >= 0) {
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", fd);
    int probe = open(f->path, O_RDONLY | O_CLOEXEC);
    if (probe >= 0) {
      close(probe);
      f->fd = fd;
      return 0;
    }
    close(fd);
  }
#endif
  snprintf(f->path, sizeof f->path, "/tmp/mnistd-fuzz-%ld", (long)getpid());
  f->fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (f->fd < 0) return -errno;
  f->is_tmp = 1;
  atexit(fuzz_file_cleanup);
  return 0;
}

/* Makes the file hold exactly data[0..size) and returns its path (NULL and
 * a message on stderr if the file cannot be written: the harness then skips
 * the input rather than report a false crash). */
static inline const char *fuzz_file_set(const uint8_t *data, size_t size) {
  fuzz_file *f = &fuzz_file_state;
  if (fuzz_file_open() != 0) {
    perror("fuzz: cannot create a temporary file");
    return NULL;
  }
  if (ftruncate(f->fd, 0) != 0) return NULL;
  for (size_t off = 0; off < size;) {
    ssize_t w = pwrite(f->fd, data + off, size - off, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return NULL;
    off += (size_t)w;
  }
  return f->path;
}

/* Bounded copy of an error message for reports (never NULL). */
static inline const char *fuzz_str(const char *s) { return s ? s : "(null)"; }

#endif
