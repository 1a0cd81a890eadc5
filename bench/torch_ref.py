#!/usr/bin/python3
"""PyTorch reference benchmark for mnistd.

Runs the same network and training settings as the C core so that
`make bench` can print PyTorch's figures beside ours.

Run it with Debian's interpreter, which is where python3-torch is installed:

    /usr/bin/python3 bench/torch_ref.py [--data-dir data/mnist] [--epochs N]
                                        [--threads N] [--arch antirectifier|relu|cnn]
                                        [--json]

(A pyenv/venv `python3` earlier on PATH usually has no torch.)

Network (Keras example antirectifier.py):
    Linear(784,256) -> Antirectifier -> Dropout(0.1)
    -> Linear(512,256) -> Antirectifier -> Dropout(0.1)
    -> Linear(512,10) -> softmax
  Antirectifier(x): x -= mean(x, dim=1)
                    x /= sqrt(max(sum(x^2, dim=1), 1e-12))   (Keras l2_normalize)
                    out = cat(relu(x), relu(-x))             (doubles the width)
  --arch relu: Linear(784,512) ReLU Dropout(0.1) Linear(512,512) ReLU
               Dropout(0.1) Linear(512,10) -> softmax
  --arch cnn:  Keras mnist_convnet (34,826 parameters): Conv2d(1,32,3) ReLU
               MaxPool2d(2) Conv2d(32,64,3) ReLU MaxPool2d(2) Flatten
               Dropout(0.5) Linear(1600,10), trained with Adam(lr=0.001,
               eps=1e-7) as mnistd's cnn benchmark. Run it with
               GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824
               (see ../shared notes): without it glibc returns PyTorch's
               activation buffers to the kernel after every batch.

Keras defaults: glorot (xavier) uniform weights, zero biases. Loss is
cross-entropy on the logits. Optimiser: RMSprop(lr=0.001, rho/alpha=0.9,
eps=1e-7). Batch 128, reshuffled every epoch.

What is timed (data is loaded into tensors up front and never timed):
  epoch_seconds                 one training pass over the 60000 training
                                images (shuffle + forward + backward + step);
                                the best epoch if --epochs > 1
  samples_per_second            60000 / epoch_seconds
  test_accuracy                 on the 10000 test images after the last epoch
  infer_single_us_median        median latency of one model.eval() forward
                                (incl. softmax) of a single 1x784 image under
                                torch.no_grad(), over 2000 calls after 200
                                warm-up calls
  infer_batch_images_per_second 10000 test images in batches of 1000 under
                                no_grad; one warm-up pass, best of 3 passes

Threads: with --threads N, torch.set_num_threads(N) AND OpenBLAS is limited
to N threads too. Debian's torch does its GEMMs in OpenBLAS (pthreads build),
which otherwise starts one thread per core whatever torch.set_num_threads
says -- so "threads=1" would silently use 2 cores for the matrix products.
OpenMP workers are set to OMP_WAIT_POLICY=PASSIVE unless the caller set the
variable: with libgomp's default spin-waiting, the idle OpenMP worker burns a
core that OpenBLAS's threads need, and on a 2-core box 2 threads then train
3-5x slower than 1 thread. PASSIVE is PyTorch's better configuration here, so
that is what we measure. Without --threads, the whole
benchmark is run once with 1 thread and once with 2 threads (each in a fresh
child process, so neither run inherits the other's thread pool or warm
caches) and the run with the shorter epoch_seconds is reported, in full
(figures are never mixed across thread settings): "PyTorch at its best
thread setting". Both runs are listed under "tried" in the JSON output.

Exit status: 0 on success, 2 on bad usage/data, 3 if torch cannot be imported
(so a caller can skip the PyTorch column).
"""

import argparse
import ctypes
import gzip
import json
import os
import statistics
import subprocess
import sys
import time

# Must be in the environment before libgomp is loaded (by `import torch`).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - depends on the interpreter
    sys.stderr.write(
        "torch_ref.py: cannot import numpy/torch with %s (%s); "
        "try /usr/bin/python3 (Debian python3-torch)\n" % (sys.executable, e))
    sys.exit(3)


BATCH = 128
SINGLE_WARMUP = 200
SINGLE_CALLS = 2000
INFER_BATCH = 1000
INFER_PASSES = 3

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


# ------------------------------------------------------------- threads ---

def set_blas_threads(n):
    """Limit OpenBLAS (torch's BLAS on Debian) to n threads. Returns the
    thread count OpenBLAS reports, or None if OpenBLAS is not loaded."""
    for name in ("libopenblas.so.0", "libopenblas.so"):
        try:
            lib = ctypes.CDLL(name)  # same handle torch's libblas already uses
            lib.openblas_set_num_threads(ctypes.c_int(n))
            return int(lib.openblas_get_num_threads())
        except (OSError, AttributeError):
            continue
    return None


# ---------------------------------------------------------------- data ---

def _open_idx(data_dir, name):
    for d in (data_dir, os.path.join(data_dir, "mnist")):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            with open(p, "rb") as f:
                return f.read(), p
        if os.path.isfile(p + ".gz"):
            with gzip.open(p + ".gz", "rb") as f:
                return f.read(), p + ".gz"
    raise FileNotFoundError("%s not found in %s" % (name, data_dir))


def read_idx(data_dir, name):
    """Parse an IDX file: 2 zero bytes, type byte (0x08 = u8), ndim byte,
    then ndim big-endian u32 dimensions, then the data."""
    buf, path = _open_idx(data_dir, name)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08:
        raise ValueError("%s: not an unsigned-byte IDX file" % path)
    ndim = buf[3]
    dims = np.frombuffer(buf, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    off = 4 + 4 * ndim
    n = int(np.prod(dims))
    if len(buf) - off != n:
        raise ValueError("%s: size %d does not match header %s"
                         % (path, len(buf) - off, tuple(dims)))
    return np.frombuffer(buf, dtype=np.uint8, count=n, offset=off).reshape(
        tuple(int(d) for d in dims))


def load_mnist(data_dir):
    def images(key):
        a = read_idx(data_dir, IDX_FILES[key])
        a = a.reshape(a.shape[0], -1).astype(np.float32) / np.float32(255.0)
        return torch.from_numpy(np.ascontiguousarray(a))

    def labels(key):
        return torch.from_numpy(read_idx(data_dir, IDX_FILES[key]).astype(np.int64))

    d = {"train_x": images("train_x"), "train_y": labels("train_y"),
         "test_x": images("test_x"), "test_y": labels("test_y")}
    if d["train_x"].shape != (60000, 784) or d["test_x"].shape != (10000, 784):
        raise ValueError("unexpected MNIST shapes %s %s"
                         % (tuple(d["train_x"].shape), tuple(d["test_x"].shape)))
    return d


# --------------------------------------------------------------- model ---

class Antirectifier(nn.Module):
    def forward(self, x):
        x = x - x.mean(dim=1, keepdim=True)
        # Keras l2_normalize: x * rsqrt(max(sum(x^2), epsilon)), epsilon=1e-12
        x = x / torch.sqrt(torch.clamp((x * x).sum(dim=1, keepdim=True), min=1e-12))
        return torch.cat((F.relu(x), F.relu(-x)), dim=1)


def build_model(arch):
    if arch == "antirectifier":
        layers = [nn.Linear(784, 256), Antirectifier(), nn.Dropout(0.1),
                  nn.Linear(512, 256), Antirectifier(), nn.Dropout(0.1),
                  nn.Linear(512, 10)]
    elif arch == "relu":
        layers = [nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.1),
                  nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.1),
                  nn.Linear(512, 10)]
    elif arch == "cnn":
        layers = [nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                  nn.Dropout(0.5), nn.Linear(1600, 10)]
    else:
        raise ValueError("unknown arch %r" % arch)
    model = nn.Sequential(*layers)  # outputs logits; softmax applied outside
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):  # Keras Dense/Conv2D defaults
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


# ----------------------------------------------------------- benchmark ---

def train_epoch(model, opt, x, y, gen):
    model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(x.shape[0], generator=gen)
    for i in range(0, x.shape[0], BATCH):
        idx = perm[i:i + BATCH]
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)  # softmax + NLL on logits
        loss.backward()
        opt.step()
    return time.perf_counter() - t0, float(loss)


def run(args, threads):
    torch.set_num_threads(threads)
    blas_threads = set_blas_threads(threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    data = load_mnist(args.data_dir)  # not timed
    xtr, ytr, xte, yte = data["train_x"], data["train_y"], data["test_x"], data["test_y"]

    model = build_model(args.arch)
    # NB: Keras RMSprop divides by sqrt(v + eps); torch divides by
    # sqrt(v) + eps. Different numerics for tiny v, same cost -- irrelevant
    # for a speed comparison.
    if args.arch == "cnn":
        opt = torch.optim.Adam(model.parameters(), lr=0.001, eps=1e-7)
    else:
        opt = torch.optim.RMSprop(model.parameters(), lr=0.001, alpha=0.9, eps=1e-7)

    epoch_times, last_loss = [], None
    for _ in range(args.epochs):
        dt, last_loss = train_epoch(model, opt, xtr, ytr, gen)
        epoch_times.append(dt)
    epoch_s = min(epoch_times)

    model.eval()
    with torch.no_grad():
        # batch inference + test accuracy
        def batch_pass():
            correct = 0
            t0 = time.perf_counter()
            for i in range(0, xte.shape[0], INFER_BATCH):
                p = torch.softmax(model(xte[i:i + INFER_BATCH]), dim=1)
                correct += int((p.argmax(dim=1) == yte[i:i + INFER_BATCH]).sum())
            return time.perf_counter() - t0, correct
        batch_pass()  # warm-up
        best_batch, correct = float("inf"), 0
        for _ in range(INFER_PASSES):
            dt, correct = batch_pass()
            best_batch = min(best_batch, dt)
        test_acc = correct / xte.shape[0]

        # single-image latency
        n_te = xte.shape[0]
        singles = [xte[i % n_te:i % n_te + 1] for i in range(SINGLE_WARMUP + SINGLE_CALLS)]
        for s in singles[:SINGLE_WARMUP]:
            torch.softmax(model(s), dim=1)
        lat = []
        pc = time.perf_counter_ns
        for s in singles[SINGLE_WARMUP:]:
            t0 = pc()
            torch.softmax(model(s), dim=1)
            lat.append(pc() - t0)

    return {
        "torch_version": torch.__version__,
        "threads": threads,
        "blas_threads": blas_threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "arch": args.arch,
        "epochs": args.epochs,
        "epoch_seconds": round(epoch_s, 4),
        "epoch_seconds_all": [round(t, 4) for t in epoch_times],
        "samples_per_second": round(xtr.shape[0] / epoch_s, 1),
        "final_train_loss": round(last_loss, 4),
        "test_accuracy": round(test_acc, 4),
        "infer_single_us_median": round(statistics.median(lat) / 1000.0, 2),
        "infer_batch_images_per_second": round(xte.shape[0] / best_batch, 1),
    }


def run_children(args, thread_list):
    """Run each thread setting in a fresh child process; return results."""
    results = []
    for t in thread_list:
        cmd = [sys.executable, os.path.abspath(__file__), "--json",
               "--threads", str(t), "--epochs", str(args.epochs),
               "--arch", args.arch, "--data-dir", args.data_dir,
               "--seed", str(args.seed)]
        p = subprocess.run(cmd, stdout=subprocess.PIPE)
        if p.returncode != 0:
            sys.exit(p.returncode)
        results.append(json.loads(p.stdout))
    return results


def print_table(best, tried):
    rows = [
        ("torch version", best["torch_version"]),
        ("arch", best["arch"]),
        ("threads (reported)", "%d (OpenBLAS %s, OMP_WAIT_POLICY=%s)" % (
            best["threads"], best["blas_threads"], best["omp_wait_policy"])),
        ("epoch seconds (best of %d)" % best["epochs"], "%.3f" % best["epoch_seconds"]),
        ("train samples/s", "%.0f" % best["samples_per_second"]),
        ("test accuracy", "%.4f" % best["test_accuracy"]),
        ("infer 1 image, median us", "%.1f" % best["infer_single_us_median"]),
        ("infer batch 1000, images/s", "%.0f" % best["infer_batch_images_per_second"]),
    ]
    w = max(len(k) for k, _ in rows)
    print("PyTorch reference (%s)" % sys.executable)
    for k, v in rows:
        print("  %-*s  %s" % (w, k, v))
    if len(tried) > 1:
        print("  per thread setting:")
        print("    %7s %9s %10s %8s %9s %12s" % ("threads", "epoch_s", "samples/s",
                                                 "acc", "1-img us", "batch img/s"))
        for r in tried:
            print("    %7d %9.3f %10.0f %8.4f %9.1f %12.0f" % (
                r["threads"], r["epoch_seconds"], r["samples_per_second"],
                r["test_accuracy"], r["infer_single_us_median"],
                r["infer_batch_images_per_second"]))


def main():
    ap = argparse.ArgumentParser(description="PyTorch reference benchmark for mnistd")
    ap.add_argument("--data-dir", default="data/mnist",
                    help="directory with the raw MNIST IDX files (default data/mnist)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads; default: try 1 and 2, report the best")
    ap.add_argument("--arch", choices=("antirectifier", "relu", "cnn"), default="antirectifier")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.epochs < 1 or (args.threads is not None and args.threads < 1):
        ap.error("--epochs and --threads must be >= 1")
    if args.threads is not None:
        try:
            best = run(args, args.threads)
        except (OSError, ValueError) as e:
            sys.stderr.write("torch_ref.py: %s\n" % e)
            sys.exit(2)
        tried = [best]
    else:
        tried = run_children(args, [1, 2])
        best = min(tried, key=lambda r: r["epoch_seconds"])
        best = dict(best, tried=[{k: r[k] for k in (
            "threads", "epoch_seconds", "samples_per_second", "test_accuracy",
            "infer_single_us_median", "infer_batch_images_per_second")} for r in tried])

    if args.json:
        print(json.dumps(best))
    else:
        print_table(best, tried)


if __name__ == "__main__":
    main()
