#!/usr/bin/env bash
# Resolve tomocare's installs from fresh virtual environments under constraints.txt, without
# installing anything (pip --dry-run --report), and print the versions that matter:
#   plain       pip install -c constraints.txt .         (from the clone)
#   gpu         pip install -c constraints.txt '.[gpu]'
#   gpu-pypi    the same with pip's environment settings ignored (--isolated), so torch 2.13.0
#               comes from PyPI (its CUDA 13 build, as in deploy/container/Dockerfile) and not from
#               a local CPU wheel; skip it with GPU_PYPI=0.
# Exit status 1 if an install does not resolve or torch is not the pinned version.
#
#   deploy/check_installs.sh [PYTHON]      # default python3; reports go to $REPORTS (default /tmp)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-python3}"
reports="${REPORTS:-/tmp}"
torch_pin="$(sed -n 's/^torch==//p' "$root/constraints.txt")"
checks=(plain gpu)
[ "${GPU_PYPI:-1}" = 1 ] && checks+=(gpu-pypi)
status=0
for check in "${checks[@]}"; do
    spec="$root[gpu]"; flags=()
    [ "$check" = plain ] && spec="$root"
    [ "$check" = gpu-pypi ] && flags=(--isolated)
    tmp="$(mktemp -d)"
    "$python" -m venv "$tmp/venv"
    report="$reports/tomocare-resolve-$check.json"
    echo "== $check: pip install ${flags[*]} --dry-run -c constraints.txt '$spec' ($("$tmp/venv/bin/python" -V))"
    if "$tmp/venv/bin/pip" install "${flags[@]}" --quiet --disable-pip-version-check --dry-run \
        --ignore-installed --report "$report" -c "$root/constraints.txt" "$spec"; then
        "$tmp/venv/bin/python" - "$report" "$torch_pin" <<'PY' || status=1
import json, sys
items = json.load(open(sys.argv[1]))["install"]
versions = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in items}
keys = ["dask", "distributed", "dask-cuda", "rapids-dask-dependency", "cuda-core", "cuda-bindings", "torch", "numpy", "zarr"]
print("   " + "  ".join(f"{k}=={versions[k]}" for k in keys if k in versions) + f"  ({len(versions)} packages)")
if versions.get("torch", "").split("+")[0] != sys.argv[2]:
    sys.exit(f"   torch resolved to {versions.get('torch')}, not the pinned {sys.argv[2]}")
PY
    else
        echo "   does NOT resolve"; status=1
    fi
    rm -rf "$tmp"
done
exit $status
