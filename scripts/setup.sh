#!/usr/bin/env bash
# Creates .venv and installs beam-etl with its test dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "beam-etl needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version)" >&2; exit 1; }
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,dask]"
# Graphviz draws the job's graph (--render_graph); Debian's package, where we may install it.
if ! command -v dot >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq graphviz >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq graphviz >/dev/null; }
  else
    echo "note: Graphviz is not installed (apt-get install graphviz): --render_graph writes .dot only" >&2
  fi
fi
