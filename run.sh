#!/usr/bin/env bash
# itr_nb's two entry points. Each creates or reuses the project-local venv in .venv, installs the
# project into it (skipped when pyproject.toml has not changed since the last install), then:
#   ./run.sh main   runs the workbook's main job (build the embedded benchmark if missing, train, evaluate)
#   ./run.sh test   runs the whole test suite (unit tests + every notebook in nbs/)
# Extra arguments go to the job (main) or to pytest (test).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "[itr_nb] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.itr_nb-installed
want=$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)
# main needs the project; test also needs its dev extras (pytest, the docs site, the browser check): installed on first use
extras=$([ "${1:-}" = test ] && echo "[dev]" || echo "")
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$have" != "$want [dev]" ] && [ "$have" != "$want $extras" ]; then
  echo "[itr_nb] installing into .venv (torch 2.14.1 + torchvision 0.29.1, see README)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch and torchvision first, pinned as a pair, so the resolver never reaches for another build
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".$extras"
  .venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
  echo "$want $extras" > "$stamp"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYDEVD_DISABLE_FILE_VALIDATION=1
job=${1:-}; shift || true
case "$job" in
  main) exec .venv/bin/itr-nb main "$@" ;;
  test) exec .venv/bin/python -m pytest -n 2 --dist loadgroup "$@" ;;
  *) echo "usage: ./run.sh main|test [args...]" >&2; exit 2 ;;
esac
