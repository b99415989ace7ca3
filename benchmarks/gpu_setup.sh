#!/usr/bin/env bash
# Source on the GPU machine (no registry there): installs the wheels carried in .whl/ into
# /tmp/site — only those whose package is missing — and puts the project on PYTHONPATH.
set -u
pkgs=""
for w in .whl/*.whl; do
  mod=$(basename "$w" | cut -d- -f1)
  case "$mod" in
    python_dotenv) mod=dotenv ;; python_dateutil) mod=dateutil ;; pyyaml) mod=yaml ;;
    markdown_it_py) mod=markdown_it ;;
  esac
  python3 -c "import $mod" 2>/dev/null || pkgs="$pkgs $w"
done
if [ -n "$pkgs" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $pkgs
fi
export PYTHONPATH="/tmp/site:$PWD"
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
echo "installed:${pkgs:- nothing}"
