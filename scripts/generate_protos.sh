#!/usr/bin/env bash
# Regenerate the Python gRPC stubs in nasoa_api/ from proto/nasoa/v1/*.proto.
# Usage: scripts/generate_protos.sh [OUTPUT_DIR]   (default: the repository root)
# The pinned grpcio-tools keeps the generated code identical on every machine;
# tests/test_protos.py fails when the committed stubs are stale.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root}"
python="${PYTHON:-$root/.venv/bin/python}"
GRPCIO_TOOLS_VERSION="1.85.1"
have="$("$python" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)"
if [ "$have" != "$GRPCIO_TOOLS_VERSION" ]; then
  echo "installing grpcio-tools==$GRPCIO_TOOLS_VERSION (found '${have:-none}')" >&2
  "$python" -m pip install -q "grpcio-tools==$GRPCIO_TOOLS_VERSION"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m grpc_tools.protoc -I "$root/proto" --python_out="$tmp" --pyi_out="$tmp" \
  --grpc_python_out="$tmp" "$root"/proto/nasoa/v1/*.proto
# protoc names the package after the proto path (nasoa.v1); ours is nasoa_api.v1.
mkdir -p "$out/nasoa_api/v1"
for f in "$tmp"/nasoa/v1/*.py "$tmp"/nasoa/v1/*.pyi; do
  sed -e 's/^from nasoa\.v1 import/from nasoa_api.v1 import/' "$f" > "$out/nasoa_api/v1/$(basename "$f")"
done
printf '"""Generated gRPC stubs of proto/nasoa/v1. Do not edit: run scripts/generate_protos.sh."""\n' \
  > "$out/nasoa_api/__init__.py"
printf '"""Generated from proto/nasoa/v1/*.proto by scripts/generate_protos.sh. Do not edit."""\n' \
  > "$out/nasoa_api/v1/__init__.py"
