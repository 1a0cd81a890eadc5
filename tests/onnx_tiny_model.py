#!/usr/bin/env python3
"""Writes a copy of an mnistd model file (format in core/nn.h) with the first
dense layer's weights and bias multiplied by SCALE, fixing the CRC32. With a
tiny scale the antirectifier's sum of squares falls under Keras' epsilon
(1e-12), the clamped regime an exporter must reproduce exactly.

    onnx_tiny_model.py IN OUT SCALE
"""
import struct, sys, zlib

src, dst, scale = sys.argv[1], sys.argv[2], float(sys.argv[3])
b = bytearray(open(src, "rb").read())
assert b[:8] == b"MNISTDNN", "not an mnistd model file"
version = struct.unpack_from("<I", b, 8)[0]
if version == 1:
    n_inputs, n_layers = struct.unpack_from("<II", b, 48)
    layers = [struct.unpack_from("<IIf", b, 56 + 12 * i) for i in range(n_layers)]
    off = 56 + 12 * n_layers + 8
else:  # version 2: input h, w, c, n_specs, then 32-byte spec records
    h, w_, c, n_layers = struct.unpack_from("<IIII", b, 48)
    n_inputs = h * w_ * c
    layers = [struct.unpack_from("<IIf", b, 64 + 32 * i) for i in range(n_layers)]
    off = 64 + 32 * n_layers + 8
assert layers[0][0] == 1, "first layer is not dense"
count = n_inputs * layers[0][1] + layers[0][1]
w = struct.unpack_from("<%df" % count, b, off)
struct.pack_into("<%df" % count, b, off, *[x * scale for x in w])
struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])) & 0xFFFFFFFF)
open(dst, "wb").write(b)
