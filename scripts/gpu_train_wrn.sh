#!/usr/bin/env bash
# Issue 21: the Energy paper's own network, trained here. In one command on one GPU (<= 10 min wall in all):
#   1. WRN-40-2 on the JPEG re-encode of all 50,000 CIFAR-10 training images with the Energy / Outlier-Exposure
#      baseline recipe (SGD Nesterov 0.9, lr 0.1 cosine per step to 1e-6, weight decay 5e-4, batch 128, dropout
#      0.3, 100 epochs, random crop (4-px zero padding) + horizontal flip), bf16 autocast, channels-last, the
#      uint8 images held on the GPU and cropped / flipped there; if 100 epochs do not fit its share of the time,
#      train.py's time_budget_s times epoch 1 and fixes the largest number of epochs that fits, the cosine
#      compressed over them (recorded in the checkpoint and metadata.json);
#   2. energy fine-tuning of that network (10 epochs, lr 0.001 cosine, m_in -23, m_out -5, lambda 0.1, 128 ID +
#      256 outliers per step from tinyimagenet/tin-outliers.tar.gz), the same time-budget rule;
#   3. Outlier Exposure fine-tuning of it (10 epochs, lr 0.001, lambda 0.5), the same.
# Each phase is one `python train.py ...` line (printed before it runs) and writes weights.pt (state_dict + meta),
# log.csv and metadata.json (sha256, recipe, data, epochs, top-1 on the 1,017 exact CIFAR-10 test images and on the
# 10,000-image JPEG test set). $OUT receives 8 files: the three weight files (named as in
# oodbench/models/registry.py), the three log.csv, one metadata.json (all phases) and run.log.
#
#   bash scripts/gpu_train_wrn.sh              # on a GPU machine (data: $OODBENCH_DATA, else ../shared/data)
#   SMOKE=1 bash scripts/gpu_train_wrn.sh      # the same path on CPU: 1 epoch per phase on a 512-image subset
#
# Environment: OUT (default outputs/gpu_train_wrn/out), WORK (phase directories and the cache; default
# outputs/gpu_train_wrn/work), DEADLINE_S (wall budget of this script, default 540 s), CLS_SHARE (the classifier's
# share of the time left after start-up, default 0.6; fine-tuning splits the rest), SMOKE_N (smoke subset, 512),
# EXTRA (train.py overrides appended to every phase, e.g. sha256=null for test archives).
set -euo pipefail
T0=$(date +%s)
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=${OUT:-$REPO/outputs/gpu_train_wrn/out}
WORK=${WORK:-$REPO/outputs/gpu_train_wrn/work}
DEADLINE_S=${DEADLINE_S:-540}
CLS_SHARE=${CLS_SHARE:-0.6}
SMOKE=${SMOKE:-0}
SMOKE_N=${SMOKE_N:-512}
EXTRA=${EXTRA:-}
PY=${PYTHON:-python}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/run.log"
: > "$LOG"
say() { echo "[gpu_train_wrn $(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }
left() { echo $(( DEADLINE_S - ($(date +%s) - T0) )); }

if [ -z "${OODBENCH_DATA:-}" ]; then
  for d in "$REPO/../shared/data" "$REPO/shared/data"; do
    if [ -f "$d/cifar10/cifar10-jpeg-train.tar.gz" ]; then OODBENCH_DATA=$(cd "$d" && pwd); break; fi
  done
fi
if [ -z "${OODBENCH_DATA:-}" ] || [ ! -d "$OODBENCH_DATA" ]; then
  say "error: no data: set OODBENCH_DATA, or put shared/data beside the checkout (../shared/data)"; exit 2
fi
export OODBENCH_DATA OODBENCH_CACHE=${OODBENCH_CACHE:-$WORK/cache} HYDRA_FULL_ERROR=1
for f in cifar10/cifar10-jpeg-train.tar.gz cifar10/cifar10-jpeg-test.tar.gz cifar10/cifar10-exact-subset.npz \
         tinyimagenet/tin-outliers.tar.gz; do
  [ -f "$OODBENCH_DATA/$f" ] || { say "error: $OODBENCH_DATA/$f is missing"; exit 2; }
done

# Preflight: the modules and the device, before any work.
set +e
"$PY" - "$SMOKE" > "$WORK/preflight.log" 2>&1 <<'EOF'
import sys
missing = []
for mod in ("torch", "hydra", "omegaconf", "PIL", "pandas", "numpy", "tqdm"):
    try:
        __import__(mod)
    except ImportError:
        missing.append(mod)
if missing:
    sys.exit(f"error: python modules missing: {', '.join(missing)} (pip install -e . in the checkout)")
import torch
print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
if sys.argv[1] != "1" and not torch.cuda.is_available():
    sys.exit("error: no CUDA device; run SMOKE=1 for the CPU check")
EOF
rc=$?
set -e
tee -a "$LOG" < "$WORK/preflight.log"
[ "$rc" -eq 0 ] || exit 2
say "data $OODBENCH_DATA | cache $OODBENCH_CACHE | out $OUT | work $WORK | deadline ${DEADLINE_S}s | smoke $SMOKE"

# Common settings of the three phases (the recipe); smoke: CPU, a subset, one epoch, no AMP.
COMMON=(arch=wrn40_2 id=cifar10 train_set=jpeg dropout=0.3 amp_dtype=bfloat16 channels_last=true
        data_on_device=true seed=0 keep_last=1 eval.enabled=true)
if [ "$SMOKE" = "1" ]; then
  COMMON+=(device=cpu amp=false check_every=1 epochs=1 "train_limit=$SMOKE_N" "outlier_limit=$((2 * SMOKE_N))"
           "eval.limit=$SMOKE_N")
else
  COMMON+=(device=cuda amp=true check_every=50)
fi
OVERHEAD_S=${OVERHEAD_S:-30}   # per phase: start-up, loading the cached arrays, evaluation, metadata
MIN_BUDGET_S=${MIN_BUDGET_S:-20}

# The outlier pool (34,800 JPEGs) is decoded into the cache while the classifier trains (best effort: if this fails,
# the fine-tuning phases decode it themselves and report any real problem).
"$PY" - <<'EOF' > "$WORK/prepare_outliers.log" 2>&1 &
from omegaconf import OmegaConf
from oodbench.paths import resolve
from oodbench.train.data import load_outliers
o = OmegaConf.load("oodbench/conf/train/train.yaml").outliers
load_outliers(o.archive, resolve("data"), resolve("cache"), o.sha256, o.member_glob, int(o.size), "cifar10")
EOF
PREP=$!

phase() {  # phase <name> <budget share of the time left> <train.py overrides...>
  local name=$1 share=$2; shift 2
  local avail budget
  avail=$(( $(left) - 15 ))
  budget=$("$PY" -c "print(max(0, int($avail * $share) - $OVERHEAD_S))")
  if [ "$SMOKE" != "1" ] && [ "$budget" -lt "$MIN_BUDGET_S" ]; then
    say "$name: skipped (only ${avail}s left, budget ${budget}s < ${MIN_BUDGET_S}s)"
    echo "{\"skipped\": \"only ${avail}s left\"}" > "$WORK/$name.skipped.json"
    return 0
  fi
  [ "$SMOKE" = "1" ] && budget=600
  local cmd=("$PY" train.py "$@" "${COMMON[@]}" "time_budget_s=$budget" "out=$WORK/$name" $EXTRA)
  say "$name: budget ${budget}s of ${avail}s left: ${cmd[*]}"
  rm -rf "${WORK:?}/$name"
  local rc t1
  t1=$(date +%s)
  set +e
  "${cmd[@]}" > "$WORK/$name.log" 2>&1
  rc=$?
  set -e
  cat "$WORK/$name.log" >> "$LOG"
  grep -E "^(accuracy|final|sha256|weights|epochs|evaluate|oodbench: error)|time budget|Error" "$WORK/$name.log" || true
  [ "$rc" -eq 0 ] || { say "$name: train.py failed (exit $rc; the end of its log is above, all of it in $LOG)"; \
                       tail -20 "$WORK/$name.log"; exit 1; }
  say "$name: done in $(( $(date +%s) - t1 ))s"
}

phase classifier "$CLS_SHARE" method=classifier init=null
wait "$PREP" || say "note: the outlier pool was not prepared ahead ($(tail -1 "$WORK/prepare_outliers.log")); the fine-tuning phases decode it"
if [ -f "$WORK/classifier/weights.pt" ]; then
  phase energy_ft 0.5 method=energy_ft "init=$WORK/classifier/weights.pt"
  phase oe 1.0 method=oe "init=$WORK/classifier/weights.pt"
fi

# $OUT: 3 weight files + 3 log.csv + metadata.json + run.log (8 files).
declare -A NAMES=([classifier]=wrn40_2_cifar10_ours [energy_ft]=wrn40_2_cifar10_energy_ft_ours
                  [oe]=wrn40_2_cifar10_oe_ours)
for p in classifier energy_ft oe; do
  if [ -f "$WORK/$p/weights.pt" ]; then
    cp "$WORK/$p/weights.pt" "$OUT/${NAMES[$p]}.pt"
    cp "$WORK/$p/log.csv" "$OUT/$p.log.csv"
  fi
done
"$PY" - "$WORK" "$OUT" "$T0" "$DEADLINE_S" "$SMOKE" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys, time
from pathlib import Path
work, out, t0, deadline, smoke = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
names = {"classifier": "wrn40_2_cifar10_ours", "energy_ft": "wrn40_2_cifar10_energy_ft_ours",
         "oe": "wrn40_2_cifar10_oe_ours"}
phases = {}
for phase, name in names.items():
    meta, skipped = work / phase / "metadata.json", work / f"{phase}.skipped.json"
    if meta.is_file():
        phases[phase] = {"registry_name": name, "out_file": f"{name}.pt", **json.loads(meta.read_text())}
    else:
        phases[phase] = json.loads(skipped.read_text()) if skipped.is_file() else {"missing": "no output"}
doc = {"script": "scripts/gpu_train_wrn.sh", "smoke": smoke == "1", "deadline_s": int(deadline),
       "wall_s": round(time.time() - t0, 1), "phases": phases}
(out / "metadata.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
for phase, m in phases.items():
    if "sha256" in m:
        acc = ", ".join(f"{k} {100 * v['top1']:.2f}% of {v['n']}" for k, v in m["accuracy"].items() if v["top1"] is not None)
        print(f"{phase}: {m['out_file']} sha256 {m['sha256']} | epochs {m['epochs']['trained']}/"
              f"{m['epochs']['requested']} | {acc}")
    else:
        print(f"{phase}: {m}")
EOF
say "done; $OUT holds: $(cd "$OUT" && ls | tr '\n' ' ')"
