/*
 * srv_image.h — turns untrusted client image bytes into one 28x28 MNIST-style
 * image (uint8, 0 = background, 255 = ink) for POST /v1/predict.
 *
 * Rules that hold for every function below unless its contract says otherwise:
 *   - Functions return int: 0 on success or a negative errno value (libuv
 *     style). srv_image_strerror() names a code. The codes and the HTTP
 *     status they suggest:
 *       -EINVAL   bad argument, or the bytes claim a format but are malformed
 *                 (bad signature, corrupt/truncated PNG, bad PGM header,
 *                 truncated raster, zero width or height)            -> 400
 *       -E2BIG    width or height above SRV_IMAGE_MAX_SIDE, or a PNG whose
 *                 metadata chunks exceed the decoder's memory limits -> 413
 *       -ENOTSUP  the format is not one we decode (JPEG, GIF, unknown
 *                 bytes)                                             -> 415
 *       -ENOMEM   allocation failed                                  -> 500
 *   - Functions that take (msg, msglen) fill msg on failure with one sentence
 *     a person can act on, e.g. "PNG is 5000x300, larger than the 4096x4096
 *     limit; scale it down before sending". On success msg is set to "".
 *     msg may be NULL (or msglen 0); the text is truncated to fit otherwise.
 *   - Input is never trusted: decoders check every length and dimension
 *     before reading, never read outside [buf, buf+len), and refuse images
 *     larger than SRV_IMAGE_MAX_SIDE on either side *before* allocating pixel
 *     memory, so one request costs at most about
 *     SRV_IMAGE_MAX_SIDE^2 * 2 bytes (32 MiB) plus libspng's row buffers.
 *   - No globals, no printing: every function is reentrant and may run on
 *     several threads at once.
 *
 * Decisions (why the pixels come out the way they do):
 *   - Gray conversion uses Rec.601 luma, Y = (77R + 150G + 29B) / 256, which
 *     maps white to 255 and black to 0 exactly. PNG gamma (gAMA) and colour
 *     profiles are ignored: canvases and scanners emit sRGB and the network
 *     only needs "ink versus paper".
 *   - Alpha is composited over white, the usual convention, so a browser
 *     canvas exported as PNG (transparent background, dark strokes) becomes
 *     dark ink on white paper. One exception keeps light strokes on a
 *     transparent canvas visible: when the opaque part covers less than half
 *     of the image (so transparency is the background) and that opaque part
 *     is light on average (alpha-weighted mean luma > 127), the image is
 *     composited over black instead.
 *   - Background detection uses the median of the border pixels (more robust
 *     than the mean when a stroke touches the edge): a median > 127 means a
 *     light background, and the image is inverted so ink is bright.
 *   - A 28x28 input with a dark background is taken to be MNIST-ready and is
 *     passed through unchanged. Every other input (any other size, or a
 *     28x28 with a light background, which is evidently not MNIST-prepared)
 *     gets the full MNIST preprocessing of srv_image_to_mnist().
 */
#ifndef MNISTD_SRV_IMAGE_H
#define MNISTD_SRV_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SRV_IMAGE_SIDE 28                               /* MNIST side */
#define SRV_IMAGE_SIZE (SRV_IMAGE_SIDE * SRV_IMAGE_SIDE) /* 784 bytes */
#define SRV_IMAGE_BOX 20        /* the digit is scaled to fit 20x20, as MNIST */
#define SRV_IMAGE_MAX_SIDE 4096u /* largest accepted width or height */

/* An 8-bit grayscale image, row-major, w*h bytes, 0 = black, 255 = white
 * (photographic convention; srv_image_to_mnist decides what is ink). */
typedef struct srv_gray {
  uint32_t w, h;
  uint8_t *px;   /* malloc'd by the decoders; owned by the struct */
} srv_gray;

/* Frees g->px and resets *g to {0, 0, NULL}. g == NULL, or a g already
 * freed or zero-initialised, is a no-op. */
void srv_gray_free(srv_gray *g);

/* Returns a static, human-readable name for any code these functions return
 * (0 gives "success"; codes they never return give "unknown error").
 * Never NULL. */
const char *srv_image_strerror(int code);

/* What srv_image_sniff() recognised. */
typedef enum srv_image_format {
  SRV_IMAGE_UNKNOWN = 0,
  SRV_IMAGE_PNG,
  SRV_IMAGE_PGM,        /* P5 (binary) or P2 (ASCII) */
  SRV_IMAGE_RAW         /* N x 784 bytes, already MNIST-style */
} srv_image_format;

/* Decides how a request body should be read. Never fails; never reads past
 * buf+len. content_type may be NULL; its parameters (";charset=...") and
 * letter case are ignored. First match wins:
 *   1. The 8-byte PNG signature gives PNG, whatever the header says (eight
 *      fixed bytes cannot plausibly begin a raw digit).
 *   2. "application/octet-stream" gives RAW: raw pixels have no magic number
 *      and a short one like "P5\n" could be their first three bytes.
 *   3. "P5" or "P2" followed by whitespace or '#' gives PGM. (Bytes win over
 *      other headers because clients such as `curl --data-binary` send a
 *      form Content-Type by default.)
 *   4. A content_type naming PNG or PGM ("image/png",
 *      "image/x-portable-graymap", "image/x-portable-anymap",
 *      "image/x-pgm") gives that format, so its decoder can explain what is
 *      wrong with the bytes.
 *   5. A body that is a non-zero multiple of 784 bytes gives RAW.
 *   6. Anything else is SRV_IMAGE_UNKNOWN. */
srv_image_format srv_image_sniff(const char *content_type, const uint8_t *buf,
                                 size_t len);

/* Decodes a PNG (gray, gray+alpha, RGB, RGBA or palette; 1 to 16 bits;
 * interlaced or not) into 8-bit gray as described under "Decisions" above.
 * The file is read through to IEND, so every CRC is checked and a file cut
 * short anywhere before IEND is refused (16-bit samples keep their high
 * byte). On success *out holds a malloc'd image the caller frees with
 * srv_gray_free(). On failure *out is {0, 0, NULL}.
 * Errors: -EINVAL (not a PNG, corrupt, truncated, bad CRC, zero size),
 * -E2BIG (a side above SRV_IMAGE_MAX_SIDE, checked from the IHDR before any
 * decoding; or oversized metadata chunks), -ENOMEM. */
int srv_image_decode_png(const uint8_t *buf, size_t len, srv_gray *out,
                         char *msg, size_t msglen);

/* Decodes a PGM: binary P5 or ASCII P2, maxval 1..65535 (16-bit samples are
 * big-endian, per the format), '#' comments anywhere in the header (and, for
 * P2, between samples). Samples are rescaled to 0..255 with rounding; a
 * sample above maxval is an error. Only the first image of a multi-image
 * file is read; bytes after it are ignored.
 * On success *out holds a malloc'd image the caller frees with
 * srv_gray_free(). On failure *out is {0, 0, NULL}.
 * Errors: -EINVAL (bad magic or header, maxval 0 or > 65535, zero size,
 * truncated raster, sample > maxval), -E2BIG (a side above
 * SRV_IMAGE_MAX_SIDE), -ENOMEM. */
int srv_image_decode_pgm(const uint8_t *buf, size_t len, srv_gray *out,
                         char *msg, size_t msglen);

/* 1 when a 28x28 MNIST-style image (0 = background) has no pixel above
 * 255/16: the "empty" flag of a prediction, the same for every format. */
int srv_image_is_empty(const uint8_t px[SRV_IMAGE_SIZE]);

/* Checks a raw body: it must be exactly N x 784 bytes (N >= 1), each block
 * one MNIST-style image used as-is. On success *n = N. On failure *n = 0.
 * Errors: -EINVAL (len is 0 or not a multiple of 784). */
int srv_image_raw_count(size_t len, size_t *n, char *msg, size_t msglen);

/* MNIST preprocessing (how LeCun et al. built MNIST from NIST):
 *   1. If the border median is light (> 127) invert, so ink is bright. The
 *      border median is then the background level `bg` (in ink terms).
 *   2. Ink is any pixel above bg + (255 - bg) / 16. Crop to the bounding box
 *      of ink. No ink: out is all zeros and *empty = 1 (not an error).
 *   3. Subtract bg and stretch so the strongest ink becomes 255 (pencil on
 *      grey paper looks like MNIST's white on black).
 *   4. Scale the crop so its longer side is 20 px, keeping the aspect ratio
 *      (shorter side rounded, at least 1 px), with area averaging: every
 *      output pixel is the coverage-weighted mean of the source pixels under
 *      it, for shrinking and enlarging alike.
 *   5. Paste it into a zero 28x28 image so that its centre of mass (in pixel
 *      index coordinates, the convention under which MNIST's mean centre is
 *      (14,14)) lands at (14,14); the shift is rounded to nearest and
 *      clamped so the digit stays whole. Ink so sparse over so large a box
 *      that it averages away to all zeros also sets *empty = 1.
 * Exception: a 28x28 input with a dark background is copied unchanged
 * (MNIST-ready); *empty is then 1 when no pixel is above the ink threshold.
 * On success out[] is written (row-major) and *empty is 0 or 1. On failure
 * out and *empty are untouched. Allocates nothing.
 * Errors: -EINVAL (NULL argument, g->px NULL, zero width or height), -E2BIG
 * (a side above SRV_IMAGE_MAX_SIDE). */
int srv_image_to_mnist(const srv_gray *g, uint8_t out[SRV_IMAGE_SIZE],
                       int *empty);

/* The whole path for one image: srv_image_sniff(), then decode PNG or PGM
 * and run srv_image_to_mnist(), or, for RAW, copy exactly 784 bytes
 * unchanged (*empty = 1 when no byte is above 15, the ink threshold for a
 * black background). A RAW body holding several images is refused here with
 * a message pointing at srv_image_raw_count(), which batch callers use.
 * content_type may be NULL. On success out[] and *empty are written. On
 * failure they are untouched.
 * Errors: those of the decoders, plus -ENOTSUP (format not recognised, or a
 * recognised but unsupported one such as JPEG, GIF, BMP or WebP) and
 * -EINVAL (a RAW body that is not exactly 784 bytes). */
int srv_image_from_bytes(const char *content_type, const uint8_t *buf,
                         size_t len, uint8_t out[SRV_IMAGE_SIZE], int *empty,
                         char *msg, size_t msglen);

#ifdef __cplusplus
}
#endif

#endif /* MNISTD_SRV_IMAGE_H */
