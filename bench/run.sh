#!/usr/bin/env bash
# Prints the benchmark table of docs/benchmarks.md (make bench). Needs the data
# (make data); adds PyTorch's figures when Debian's python3-torch is there.
# Usage: bench/run.sh BUILD_DIR   (env: MNISTD_DATA=data, SEEDS="1 2 3 4 5",
#                                  BENCH_EPOCHS40=1 to add the 40-epoch run,
#                                  BENCH_SHORT=1 for the in-core rows only:
#                                  no PyTorch, seeds, RSS, HTTP or cnn; what CI
#                                  runs under ONEDNN_MAX_CPU_ISA=AVX2)
# mnistd and PyTorch run one after the other in the same invocation; every
# timing is the best of several repetitions. The table says what else used
# the CPU meanwhile: on a shared machine, compare only figures of one run.
set -euo pipefail
B=${1:-build}
D=${MNISTD_DATA:-data}/mnist
SEEDS=${SEEDS:-1 2 3 4 5}
SHORT=${BENCH_SHORT:-0}
get() { awk -v k="$1" '$1==k {sub(/^[^ ]+ /, ""); print}' <<<"$2"; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "") print "n/a"; else printf f, v }'; }
# Other processes on the CPU over one second (top's second sample), and the load.
beside() {
  local others
  others=$(top -bn2 -d1 -w 200 2>/dev/null | awk '/^top -/ {n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 >= 5 {printf "%s %s%%, ", $12, $9}') ||
    others="(top not available)"
  echo "load $(cut -d' ' -f1 /proc/loadavg); ${others:-nothing else above 5% CPU}" | sed 's/, $//'
}

cpu=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/,"",$2); print $2; exit}')
backend=$("$B"/bench/bench_core "$D" backend)
before=$(beside)
train=$("$B"/bench/bench_core "$D" train 2 3)
train1=$("$B"/bench/bench_core "$D" train 1 2)
gemm=$("$B"/bench/bench_core "$D" gemm 2)
peak=$("$B"/bench/bench_core "$D" peak 2)
infer=$("$B"/bench/bench_core "$D" infer 2)
seeds=""; rss=""; http=""; torch=""; torch_cnn=""; cnn=""; cnn1=""
if [ "$SHORT" != 1 ]; then
  # The cnn preset (issue 12): 2 epochs, 2 threads, Adam; one image at a time.
  cnn=$("$B"/bench/bench_core "$D" train 2 2 cnn)
  cnn1=$("$B"/bench/bench_core "$D" infer1 cnn)
  seeds=$("$B"/bench/bench_core "$D" seeds 4 $SEEDS)
  # Peak RSS of a real `mnistd train` (1 epoch): the kernel's high-water mark.
  rss=$(python3 -c 'import resource,subprocess,sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)' \
    "$B"/mnistd train --data-dir "${MNISTD_DATA:-data}" --epochs 1)
  http=$(bench/http.sh "$B" "${MNISTD_DATA:-data}")
  if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    torch=$(/usr/bin/python3 bench/torch_ref.py --data-dir "$D" --epochs 2 --json 2>/dev/null || true)
    # Its first CNN epoch is slow (primitive creation) and glibc must keep
    # freed memory, or mmap churn dominates: its best epoch of 3, with that.
    torch_cnn=$(GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824 \
      /usr/bin/python3 bench/torch_ref.py --data-dir "$D" --arch cnn --epochs 3 --json 2>/dev/null || true)
  fi
fi
after=$(beside)
tj() { [ -n "$torch" ] && python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print(("%.3f" % v) if isinstance(v,float) else v)' "$torch" "$1" || echo "n/a"; }

epoch=$(get epoch_seconds "$train")
gsec=$(get gemm_epoch_seconds "$gemm")
gflop=$(get gemm_epoch_gflop "$gemm")
tepoch=$(tj epoch_seconds)
ratio=$(awk -v a="$epoch" -v b="$tepoch" 'BEGIN { if (b+0 > 0) printf "%.1fx", b/a; else print "n/a" }')
rest=$(awk -v e="$epoch" -v g="$gsec" 'BEGIN { r = e - g; if (r < 0) r = 0; printf "%.3f s (%.0f%%)", r, 100*r/e }')

echo "CPU: $cpu, $(nproc) cores; $(get library "$backend"), isa $(get isa "$backend"), matmul kernel $(get kernel "$backend")${ONEDNN_MAX_CPU_ISA:+ (ONEDNN_MAX_CPU_ISA=$ONEDNN_MAX_CPU_ISA)}"
echo "Beside it: at the start $before; at the end $after."
echo
printf '| figure | mnistd | target | PyTorch %s |\n' "$(tj torch_version)"
printf '|---|---|---|---|\n'
printf '| training epoch, 60k images, batch 128, 2 threads (s, best of 3) | %s | <= 0.45 on AVX-512 | %s |\n' "$epoch" "$tepoch"
printf '| PyTorch epoch / mnistd epoch | %s | >= 4x | (%s threads) |\n' "$ratio" "$(tj threads)"
printf '| training samples/s, 2 threads | %s | | %s |\n' "$(get samples_per_second "$train")" "$(tj samples_per_second)"
printf '| training epoch, 1 thread (s) | %s | | |\n' "$(get epoch_seconds "$train1")"
# The trainer's own choice over its first steps (train.c: handoff_pick).
printf '| cross-core hand-off, as the 2-thread trainer chose it | %s | | |\n' \
  "$(case "$(get handoff "$train")" in 1) echo on;; 0) echo off;; *) echo undecided;; esac)"
printf '| the GEMMs of one epoch alone, 2 threads (s): as trained (first layer on the %s of 784 inputs a batch keeps, mean) / on all inputs | %s / %s | | |\n' \
  "$(get first_layer_inputs_kept "$gemm")" "$gsec" "$(get gemm_dense_epoch_seconds "$gemm")"
printf '| the rest of the epoch: epoch - GEMMs (s, share) | %s | <= 25%% | |\n' "$rest"
# Timed inside the step: each thread's wall time in the dense products
# (nn_trainer_gemm_seconds) against the epoch, so operands the other work
# evicted count as the products' time, as they are.
egemm=$(get epoch_gemm_seconds_per_thread "$train")
printf '| inside the step, per thread: the GEMMs / the rest (s, share of the epoch) | %s / %s | <= 25%% | |\n' "$egemm" \
  "$(awk -v e="$epoch" -v g="$egemm" 'BEGIN { r = e - g; if (r < 0) r = 0; printf "%.3f (%.0f%%)", r, 100*r/e }')"
# CPU seconds per thread: what the work cost, whatever else ran on the cores.
ecpu=$(get epoch_cpu_seconds_per_thread "$train"); gcpu=$(get gemm_epoch_cpu_seconds_per_thread "$gemm")
printf '| CPU s per thread: epoch / GEMMs alone / the rest (share) | %s / %s / %s | <= 25%% | |\n' "$ecpu" "$gcpu" \
  "$(awk -v e="$ecpu" -v g="$gcpu" 'BEGIN { r = e - g; if (r < 0) r = 0; printf "%.3f (%.0f%%)", r, 100*r/e }')"
printf '| GFLOP/s (of the %s GFLOP an epoch runs): GEMMs alone / whole step / best single GEMM (%s, 2 threads) | %s / %s / %s | | |\n' \
  "$gflop" "$(get peak_size "$peak")^3" "$(get gemm_gflops "$gemm")" \
  "$(awk -v f="$gflop" -v e="$epoch" 'BEGIN{printf "%.0f", f/e}')" "$(get peak_gflops "$peak")"
if [ "$SHORT" != 1 ]; then
  accs=""; worst=1
  for s in $SEEDS; do
    a=$(get "seed_${s}_accuracy" "$seeds")
    accs="$accs $s:$(awk -v a="$a" 'BEGIN{printf "%.2f%%", a*100}')"
    worst=$(awk -v a="$a" -v w="$worst" 'BEGIN{print (a<w)?a:w}')
  done
  mean=$(for s in $SEEDS; do get "seed_${s}_accuracy" "$seeds"; done | awk '{t+=$1; n++} END {printf "%.2f%%", 100*t/n}')
  printf '| test accuracy after 4 epochs, seeds%s | worst %.2f%%, mean %s | >= 97.6%% | %s (2 epochs) |\n' "$accs" "$(awk -v w="$worst" 'BEGIN{print w*100}')" "$mean" "$(tj test_accuracy)"
fi
printf '| inference, one image, median (us) | %s | <= 10 | %s |\n' "$(get infer_single_us_median "$infer")" "$(tj infer_single_us_median)"
# A forward pass is 0.674 MFLOP an image: the ceiling is the best single
# GEMM's rate over that.
ceil=$(awk -v p="$(get peak_gflops "$peak")" 'BEGIN { printf "%.0f", p * 1e9 / 673792 }')
printf '| inference, batches of 1000, one call, OpenMP team of 2 (images/s; per CPU s) | %s; %s | >= 400000 (ceiling at the best GEMM rate: %s) | %s |\n' "$(get infer_batch_images_per_second "$infer")" "$(get infer_batch_images_per_cpu_second "$infer")" "$ceil" "$(tj infer_batch_images_per_second)"
printf '| inference, batches of 1000, 2 threads of 1 core each (images/s; per CPU s) | %s; %s | >= 400000 | |\n' "$(get infer_batch_threads_images_per_second "$infer")" "$(get infer_batch_threads_images_per_cpu_second "$infer")"
if [ "$SHORT" != 1 ]; then
  printf '| peak RSS of mnistd train (MB) | %s | < 150 | |\n' "$rss"
  printf '| daemon: POST /v1/predict, 1 image, keep-alive, wrk -t2 -c16 (req/s) | %s | >= 15000 | |\n' "$(get predict_requests_per_second "$http")"
  printf '| daemon: predict p99 latency (ms) | %s | <= 2 | |\n' "$(get predict_p99_ms "$http")"
  printf '| daemon: predict req/s while a job trains | %s | | |\n' "$(get predict_training_requests_per_second "$http")"
  printf '| daemon: predict p99 while a job trains (ms) | %s | <= 10 | |\n' "$(get predict_training_p99_ms "$http")"
  printf '| daemon: idle RSS with a model loaded (MB) | %s | <= 40 | |\n' "$(get idle_rss_mb "$http")"
  printf '| daemon: peak RSS while training MNIST (MB) | %s | <= 150 | |\n' "$(get training_rss_mb "$http")"
fi
# The cnn rows only when they were measured (not under BENCH_SHORT=1).
if [ "$SHORT" != 1 ]; then
  tcj() { [ -n "$torch_cnn" ] && python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print(("%.3f" % v) if isinstance(v,float) else v)' "$torch_cnn" "$1" || echo "n/a"; }
  cepoch=$(get epoch_seconds "$cnn"); tcepoch=$(tcj epoch_seconds)
  printf '| cnn preset: training epoch, batch 128, Adam, 2 threads (s, best of 2) | %s | <= 4 | %s (%s threads) |\n' "$cepoch" "$tcepoch" "$(tcj threads)"
  printf '| cnn: PyTorch epoch / mnistd epoch | %s | >= 2.5x | |\n' "$(awk -v a="$cepoch" -v b="$tcepoch" 'BEGIN { if (b+0 > 0) printf "%.1fx", b/a; else print "n/a" }')"
  printf '| cnn: test accuracy after those epochs | %s | | %s |\n' "$(get val_accuracy "$cnn")" "$(tcj test_accuracy)"
  printf '| cnn: inference, one image, median (us) | %s | <= 100 | %s |\n' "$(get infer_single_us_median "$cnn1")" "$(tcj infer_single_us_median)"
fi
if [ "${BENCH_CNN_SEEDS:-0}" = 1 ]; then
  for s in 1 2 3; do
    a=$("$B"/mnistd train --data-dir "${MNISTD_DATA:-data}" --arch cnn --optimizer adam --epochs 5 --seed $s --json | tail -1 |
        python3 -c 'import json,sys; print("%.2f%%" % (100*json.load(sys.stdin)["val_accuracy"]))')
    printf '| cnn: test accuracy after 5 epochs, Adam, seed %s | %s | >= 99.0%% | |\n' "$s" "$a"
  done
  a=$("$B"/mnistd train --data-dir "${MNISTD_DATA:-data}" --arch cnn --optimizer adam --epochs 15 \
      --augment shift=2,rotate=10,scale=0.1 --json | tail -1 |
      python3 -c 'import json,sys; print("%.2f%%" % (100*json.load(sys.stdin)["val_accuracy"]))')
  printf '| cnn: test accuracy after 15 epochs with augmentation, seed 1 | %s | >= 99.3%% | |\n' "$a"
fi
if [ "${BENCH_EPOCHS40:-0}" = 1 ]; then
  a40=$("$B"/mnistd train --data-dir "${MNISTD_DATA:-data}" --epochs 40 --json | tail -1 |
        python3 -c 'import json,sys; print("%.2f%%" % (100*json.load(sys.stdin)["val_accuracy"]))')
  printf '| test accuracy after 40 epochs, seed 1 | %s | >= 98.1%% | |\n' "$a40"
fi
