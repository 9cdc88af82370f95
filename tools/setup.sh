#!/usr/bin/env bash
# Idempotent set-up: a Python 3.10 virtual environment in .venv with torch, Detectron2
# (the sal-detectron2 wheel: the only Detectron2 build on PyPI), Hydra, pycocotools and
# frn-det itself in editable mode. Re-running is a no-op while nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FRN_DET_VENV:-.venv}"
PY_VERSION="${FRN_DET_PYTHON:-3.10}"
STAMP="$VENV/.frn_det_setup"
want="$(cat pyproject.toml tools/setup.sh | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$VENV/bin/python" -c "import frn_det, detectron2" 2>/dev/null; then
    echo "[setup] $VENV is up to date"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    py=""
    for cand in "python$PY_VERSION" "$(command -v pyenv >/dev/null && pyenv root)/versions/$PY_VERSION"*/bin/python3; do
        if [[ -n "$cand" ]] && "$cand" -c "import venv" >/dev/null 2>&1; then py="$cand"; break; fi
    done
    if [[ -z "$py" ]] && command -v pyenv >/dev/null; then
        full="$(pyenv versions --bare | grep -E "^${PY_VERSION//./\\.}(\.|$)" | tail -1 || true)"
        [[ -n "$full" ]] && py="$(pyenv root)/versions/$full/bin/python3"
    fi
    if [[ -z "$py" ]]; then
        echo "[setup] error: Python $PY_VERSION not found (the sal-detectron2 wheel is built for CPython 3.10)." >&2
        echo "[setup] install it (e.g. 'pyenv install 3.10') or set FRN_DET_PYTHON." >&2
        exit 1
    fi
    echo "[setup] creating $VENV with $py"
    "$py" -m venv "$VENV"
fi

pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
echo "[setup] installing torch, torchvision, Detectron2 and frn-det (first run downloads ~3 GB)"
"${pip[@]}" install -q "torch==2.14.1" "torchvision==0.29.1"
# setuptools' editable backend emits an informational "Editable installation" warning on
# every editable install; it says nothing about this project.
PYTHONWARNINGS="ignore:Editable installation" "${pip[@]}" install -q -e ".[detectron2,dev]"
"$VENV/bin/python" -c "import frn_det, detectron2, torch; print('[setup] ok: torch', torch.__version__, 'detectron2', detectron2.__version__)"
echo "$want" > "$STAMP"
