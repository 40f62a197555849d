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
# Debian's packages, where we may install them: Graphviz draws the job's graph (--render_graph);
# Chromium renders `beam-etl report`'s page in its test.
need=()
command -v dot >/dev/null || need+=(graphviz)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
if (( ${#need[@]} )); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
  else
    echo "note: not installed: ${need[*]} (apt-get install ${need[*]}): without Graphviz --render_graph" \
         "writes .dot only; without Chromium the report's browser test fails" >&2
  fi
fi
