#!/usr/bin/env bash
# Issue 25's GPU check (about 8 minutes), adapted from ../shared/gpu/check.sh. Runs ON the device machine:
#   bash ../shared/gpu/prepare.sh && cp benchmarks/gpu_check.sh .gpu/check.sh
#   then run(command="bash .gpu/check.sh", carry=[".gpu"], timeout_s=540); figures go to docs/results/gpu/<card>/.
# Measures: host syncs per step on CUDA; feature extraction's cold extraction vs the bare bf16 pass at 224 px
# (goal: cold_extraction >= 0.8 x bare_forward_bf16 in feature_cache_224.json's throughput_img_per_s); fine-tuning
# img/s at 224 px with trainer=gpu (goal >= 4,000 on an H100/H200); the main job at 224 px on 10,000 images;
# hydra/launcher=gpus when the machine has 2 or more GPUs.
set -uo pipefail
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
W=$(mktemp -d); OUT=${OUT:-$W/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HYDRA_FULL_ERROR=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$W/site" .gpu/whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:$PWD:$W/site TRANSFERLAB_DATA_DIR=$PWD/.gpu TRANSFERLAB_CACHE_DIR=$W/cache
D="data.root=$PWD/.gpu/fashion-mnist"
summary=$OUT/summary.txt; : > "$summary"
step() { local name=$1 limit=$2; shift 2; local s=$SECONDS
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1; local c=$?
  echo "$name rc=$c $((SECONDS-s))s" | tee -a "$summary"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$summary"
# 1. Host syncs per training step, counted by torch.cuda.set_sync_debug_mode.
step host_syncs 90 python3 -m benchmarks host_syncs --out "$OUT/bench.json"
# 2. Feature extraction at 224 px with the GPU preset (batch 256, eval 1,024): cold fit vs the bare bf16 pass.
step feature_cache 130 python3 -c "
import json, benchmarks.feature_cache as fc
r = fc.run(train_size=10000, epochs=2, overrides=['data.image_size=224', 'trainer=gpu', '$D'], skip=('in_loop',))
json.dump(r, open('$OUT/feature_cache_224.json', 'w'), indent=1, default=str)"
# 3. Fine-tuning throughput at 224 px with trainer=gpu's batch, LR rule and fused AdamW (img/s in metrics.json).
step ft_224 120 python3 -m transferlab.train trainer=gpu strategy=fine_tuning $D data.train_size=20000 data.image_size=224 \
  trainer.max_epochs=1 seed=0 test=false hydra.run.dir=$W/ft_224
cp $W/ft_224/metrics.json "$OUT/metrics_ft_224.json" 2>/dev/null
# 4. The main job at a GPU budget: native resolution, 10,000 images (one job per GPU when there are several).
gpus=$(nvidia-smi -L | wc -l); launcher=$([ "$gpus" -gt 1 ] && echo "hydra/launcher=gpus" || echo "")
step compare 150 python3 -m transferlab.train -m experiment=compare_strategies trainer=gpu $D $launcher \
  data.image_size=224 data.train_size=10000 hydra.sweep.dir=$W/compare
cp $W/compare/report.md "$OUT/compare_report.md" 2>/dev/null
cp $W/compare/results.csv "$OUT/compare_results.csv" 2>/dev/null
grep -h "Job on GPU" $W/compare/*/*.log > "$OUT/launcher_gpus.txt" 2>/dev/null
cat "$summary"
