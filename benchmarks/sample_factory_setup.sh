#!/usr/bin/env bash
# Create the Python environment in which `ftcl bench --only nethack` runs Sample Factory 2.1.1.
#
#   bash benchmarks/sample_factory_setup.sh VENV_DIR      (then: ftcl bench --only nethack --sf-venv VENV_DIR)
#
# Sample Factory 2.1.1 needs gymnasium < 1.0 and numpy < 2, and ftcl's own venv has what Ray RLlib
# 2.60 pins (gymnasium 1.2.2, numpy 2), so Sample Factory gets an environment of its own. The
# benchmark runs it there as a subprocess that imports only the Ray-free parts of ftcl (the
# nethack env and the tty_lstm network) through PYTHONPATH, so this environment needs their
# dependencies (pydantic, nle) and Sample Factory's, nothing of Ray.
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: bash benchmarks/sample_factory_setup.sh VENV_DIR" >&2
    exit 2
fi
VENV_DIR=$1
PYTHON=${PYTHON:-python3.11}
if ! command -v "$PYTHON" >/dev/null; then
    echo "sample_factory_setup.sh: $PYTHON not found (set PYTHON=... to a Python 3.11)" >&2
    exit 2
fi

"$PYTHON" -m venv "$VENV_DIR"
PIP="$VENV_DIR/bin/pip"
"$PIP" install -q -U pip
# torch first and pinned: ftcl's version, whose CPU build is a small local wheel here; an unpinned
# torch would let Sample Factory's requirement pull a CUDA build of several GB.
"$PIP" install -q torch==2.13.0
# Sample Factory with pins its requirements allow (numpy < 2, gymnasium < 1.0) and that the
# ftcl modules it imports work with; pydantic for ftcl.envs.nethack's options.
"$PIP" install -q sample-factory==2.1.1 "numpy>=1.26,<2" "gymnasium==0.29.1" "pydantic>=2.7,<3"
# nle 1.3.0 asks for gymnasium 1.2; alone with --no-deps it runs on 0.29 (its wheel bundles NetHack).
"$PIP" install -q --no-deps nle==1.3.0
"$VENV_DIR/bin/python" - <<'EOF'
import importlib.metadata as m
print("sample factory venv ready:", ", ".join(f"{p} {m.version(p)}" for p in
      ("sample-factory", "torch", "numpy", "gymnasium", "nle", "pydantic")))
EOF
# keep the venv out of git status wherever it is made (inside the repository, say)
echo '*' > "$VENV_DIR/.gitignore"
