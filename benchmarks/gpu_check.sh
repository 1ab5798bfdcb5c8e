#!/usr/bin/env bash
# The GPU check of issue 13, as ONE device call (bench_training.py on a lent GPU machine):
#   (a) materialize trained_weights vs bare ultralytics, AMP on, 640 px, batch 64 (target ratio <= 1.05);
#   (b) evaluation_report vs two bare .val();
#   (c) camera-size 1920x1080 frames: ingest + training on processed_images vs bare on the raw export
#       (target >= 1.7x epoch throughput);
# dataloader workers = usable CPUs (affinity and cgroup limit), GPU utilisation sampled through NVML.
#
# On the device (wheels carried in .whl/, see benchmarks/RESULTS.md; ~5.5 min with the defaults):
#   bash benchmarks/gpu_check.sh
# Sizes: TRAIN_ARGS, CAMERA_ARGS (bench_training.py options), TRAIN_SECTIONS (default train,eval).
# Dry run of the same logic on this CPU machine (no wheels, tiny sizes, the polars stand-in forced):
#   OUT=/tmp/gpu-dry PYTHON=.venv/bin/python SKIP_INSTALL=1 FORCE_POLARS_STUB=1 \
#     TRAIN_ARGS="--device cpu --images 24 --epochs 2 --imgsz 64 --batch 8" \
#     CAMERA_ARGS="--device cpu --camera-images 12 --frame-size 640x360 --camera-imgsz 64 --epochs 2 --batch 8" \
#     bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check-out}
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
WORK=${WORK:-/tmp/gpu-check-work}
TRAIN_ARGS=${TRAIN_ARGS:---device 0 --images 1500 --epochs 5 --imgsz 640 --batch 64}
CAMERA_ARGS=${CAMERA_ARGS:---device 0 --camera-images 800 --frame-size 1920x1080 --camera-imgsz 640 --epochs 5 --batch 64}
TRAIN_SECTIONS=${TRAIN_SECTIONS:-train,eval}
export PYTHONUNBUFFERED=1
rm -rf "$WORK"  # a warm machine keeps the last call's /tmp: start from nothing
mkdir -p "$OUT" "$WORK"
started=$(date +%s)
stamp() { echo "[gpu_check +$(($(date +%s) - started))s] $*"; }

if [ -z "${SKIP_INSTALL:-}" ]; then
  stamp "installing $(ls .whl/*.whl | wc -l) wheels into $SITE"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi

# ultralytics 8.4 imports polars for three small things while training (results.csv read back into
# the checkpoint, labels.jpg, results.png); the polars wheel (54 MB) does not fit the 64 MiB a device
# call carries, so a pandas-backed stand-in for exactly those calls goes on the path when polars is missing.
if [ -n "${FORCE_POLARS_STUB:-}" ] || ! "$PYTHON" -c "import polars" 2>/dev/null; then
  mkdir -p "$WORK/polars-stub"
  cat > "$WORK/polars-stub/polars.py" <<'EOF'
"""Stand-in for the polars calls ultralytics 8.4 makes while training and validating (device check only)."""
import io

import pandas as pd

__version__ = "0.0"  # below 1.0: MLflow's polars support declines it (an ImportError it expects)

class DataFrame:
    def __init__(self, data=None, schema=None, orient=None):
        self._df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data, columns=schema)

    @property
    def columns(self):
        return list(self._df.columns)

    def __getitem__(self, key):
        return self._df[key].to_numpy()

    def __len__(self):
        return len(self._df)

    def select(self, *columns):
        return DataFrame(self._df[list(columns)])

    def to_numpy(self):
        return self._df.to_numpy()

    def to_dict(self, as_series=True):
        return {name: self._df[name].tolist() for name in self._df.columns}

    def write_csv(self, file=None):
        return self._df.to_csv(file, index=False)


def read_csv(source, infer_schema_length=None, **_):
    frame = pd.read_csv(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    frame.columns = [str(name).strip() for name in frame.columns]
    return DataFrame(frame)
EOF
  export PYTHONPATH=$WORK/polars-stub${PYTHONPATH:+:$PYTHONPATH}
  stamp "polars: pandas-backed stand-in"
fi

stamp "environment"
(nvidia-smi || echo "no nvidia-smi") 2>&1 | tee "$OUT/nvidia-smi.txt"
"$PYTHON" - <<'EOF' 2>&1 | tee "$OUT/environment.txt" || exit 1
import os, sys
sys.path.insert(0, os.getcwd())
import torch, ultralytics, dagster, mlflow
from yolo_assets.core.parallel import usable_cpus
import yolo_assets.definitions  # the code location imports: every asset, resource and sensor
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.cuda.is_available()}), "
      f"ultralytics {ultralytics.__version__}, dagster {dagster.__version__}, mlflow {mlflow.__version__}")
print(f"cpus: os.cpu_count()={os.cpu_count()}, usable_cpus()={usable_cpus()}")
EOF

# A second, independent view of the device's load: one line a second for the whole check.
if command -v nvidia-smi >/dev/null; then
  nvidia-smi dmon -s um -d 1 > "$OUT/dmon.txt" 2>&1 &
  dmon=$!
fi

stamp "(a) training + (b) evaluation: $TRAIN_ARGS"
# shellcheck disable=SC2086
"$PYTHON" benchmarks/bench_training.py --sections "$TRAIN_SECTIONS" $TRAIN_ARGS --workdir "$WORK/train" --json "$OUT/train.json" 2>&1 \
  | tee "$OUT/train.log" | grep -v "━━"
stamp "(c) camera-size frames: $CAMERA_ARGS"
# shellcheck disable=SC2086
"$PYTHON" benchmarks/bench_training.py --sections camera --camera-max-side 0 $CAMERA_ARGS --workdir "$WORK/camera" --json "$OUT/camera.json" 2>&1 \
  | tee "$OUT/camera.log" | grep -v "━━"

[ -n "${dmon:-}" ] && kill "$dmon" 2>/dev/null
# The children's own logs (ultralytics and Dagster output), for a failure's cause.
tail -n 40 "$WORK"/train/*.log "$WORK"/camera/*.log > "$OUT/children-tail.txt" 2>/dev/null
stamp "done"
grep -h "^(\|^    \|^dataset\|^machine" "$OUT/train.log" "$OUT/camera.log"
