#!/usr/bin/env bash
# Build the documentation as CI does: HTML with warnings as errors (the notebooks are
# executed on the way), then every example through Sphinx's doctest builder.
#
#   bash docs/build.sh            # from a venv with the docs extra: pip install -e ".[docs]"
#
# SPHINXBUILD picks another sphinx-build (default: the one next to the running Python,
# else the one on PATH). Exits non-zero on any warning, failed notebook or failed example.
set -euo pipefail
cd "$(dirname "$0")"
if [[ -z "${SPHINXBUILD:-}" ]]; then
    if [[ -x ../.venv/bin/sphinx-build ]]; then
        SPHINXBUILD=../.venv/bin/sphinx-build
    else
        SPHINXBUILD=sphinx-build
    fi
fi
export JUPYTER_PLATFORM_DIRS=1
start=$(date +%s)

# -E: read every source again, so the notebooks are executed on every build.
"$SPHINXBUILD" -E -W --keep-going -q -b html . _build/html
# The notebooks ran above; the doctest builder only needs the examples.
"$SPHINXBUILD" -E -W --keep-going -q -b doctest -d _build/doctrees-doctest \
    -D nb_execution_mode=off . _build/doctest
tail -n 5 _build/doctest/output.txt
echo "docs: html in docs/_build/html, doctests passed, in $(( $(date +%s) - start )) s"
