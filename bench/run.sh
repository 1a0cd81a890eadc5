#!/usr/bin/env bash
# Prints the benchmark table of the README (make bench). Needs the data
# (make data); adds PyTorch's figures when Debian's python3-torch is there.
# Usage: bench/run.sh BUILD_DIR   (env: MNISTD_DATA=data, SEEDS="1 2 3",
#                                  BENCH_EPOCHS40=1 to add the 40-epoch run)
set -euo pipefail
B=${1:-build}
D=${MNISTD_DATA:-data}/mnist
SEEDS=${SEEDS:-1 2 3}
get() { awk -v k="$1" '$1==k {print $2}' <<<"$2"; }

echo "mnistd benchmarks on $(nproc) cores, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/,"",$2); print $2}')" >&2
train=$("$B"/bench/bench_core "$D" train 2 2)
train1=$("$B"/bench/bench_core "$D" train 1 2)
gemm=$("$B"/bench/bench_core "$D" gemm 2)
infer=$("$B"/bench/bench_core "$D" infer 2)
seeds=$("$B"/bench/bench_core "$D" seeds 4 $SEEDS)
# Peak RSS of a real `mnistd train` (1 epoch): the kernel's high-water mark.
rss=$(python3 -c 'import resource,subprocess,sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)' \
  "$B"/mnistd train --data-dir "${MNISTD_DATA:-data}" --epochs 1)

http=$(bench/http.sh "$B" "${MNISTD_DATA:-data}")

torch=""
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  torch=$(/usr/bin/python3 bench/torch_ref.py --data-dir "$D" --json 2>/dev/null || true)
fi
tj() { [ -n "$torch" ] && python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print(("%.3f" % v) if isinstance(v,float) else v)' "$torch" "$1" || echo "n/a"; }

accs=""; worst=1
for s in $SEEDS; do
  a=$(get "seed_${s}_accuracy" "$seeds")
  accs="$accs $s:$(awk -v a="$a" 'BEGIN{printf "%.2f%%", a*100}')"
  worst=$(awk -v a="$a" -v w="$worst" 'BEGIN{print (a<w)?a:w}')
done

printf '| figure | mnistd | target | PyTorch %s |\n' "$(tj torch_version)"
printf '|---|---|---|---|\n'
printf '| training epoch, 60k images, 2 threads (s) | %s | <= 1.2 | %s |\n' "$(get epoch_seconds "$train")" "$(tj epoch_seconds)"
printf '| training samples/s, 2 threads | %s | >= 50000 | %s |\n' "$(get samples_per_second "$train")" "$(tj samples_per_second)"
printf '| training epoch, 1 thread (s) | %s | | |\n' "$(get epoch_seconds "$train1")"
printf '| the bare GEMMs of one epoch, OpenBLAS 2 threads (s) | %s | | |\n' "$(get gemm_epoch_seconds "$gemm")"
printf '| test accuracy after 4 epochs, seeds%s | worst %.2f%% | >= 97.6%% | %s (1 epoch) |\n' "$accs" "$(awk -v w="$worst" 'BEGIN{print w*100}')" "$(tj test_accuracy)"
printf '| inference, one image, median (us) | %s | <= 30 | %s |\n' "$(get infer_single_us_median "$infer")" "$(tj infer_single_us_median)"
printf '| inference, batches of 1000 (images/s) | %s | >= 200000 | %s |\n' "$(get infer_batch_images_per_second "$infer")" "$(tj infer_batch_images_per_second)"
printf '| peak RSS of mnistd train (MB) | %s | < 150 | |\n' "$rss"
printf '| daemon: POST /v1/predict, 1 image, keep-alive, wrk -t2 -c16 (req/s) | %s | >= 15000 | |\n' "$(get predict_requests_per_second "$http")"
printf '| daemon: predict p99 latency (ms) | %s | <= 2 | |\n' "$(get predict_p99_ms "$http")"
printf '| daemon: predict req/s while a job trains | %s | | |\n' "$(get predict_training_requests_per_second "$http")"
printf '| daemon: predict p99 while a job trains (ms) | %s | <= 10 | |\n' "$(get predict_training_p99_ms "$http")"
printf '| daemon: idle RSS with a model loaded (MB) | %s | <= 40 | |\n' "$(get idle_rss_mb "$http")"
printf '| daemon: peak RSS while training MNIST (MB) | %s | <= 150 | |\n' "$(get training_rss_mb "$http")"
if [ "${BENCH_EPOCHS40:-0}" = 1 ]; then
  a40=$("$B"/mnistd train --data-dir "${MNISTD_DATA:-data}" --epochs 40 --json | tail -1 |
        python3 -c 'import json,sys; print("%.2f%%" % (100*json.load(sys.stdin)["val_accuracy"]))')
  printf '| test accuracy after 40 epochs, seed 1 | %s | >= 98.1%% | |\n' "$a40"
fi
