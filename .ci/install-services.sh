#!/usr/bin/env bash
# Install what tests/services needs into the active virtual environment and the machine:
# moto + s3fs (S3), gcp-storage-emulator + gcsfs (GCS), adlfs + Azurite (Azure Blob),
# redis-server. Idempotent; run from anywhere: `bash .ci/install-services.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON="${PYTHON:-python}"

echo "== services: python packages"
# One pip command for all: the resolver then picks a botocore that aiobotocore (under s3fs)
# accepts and one fsspec for s3fs and gcsfs; installed one after the other, moto upgrades
# botocore past aiobotocore's range.
"$PYTHON" -m pip install -q "moto[server]" s3fs gcp-storage-emulator gcsfs adlfs

echo "== services: Azurite (npm, into .services/node)"
if command -v npm >/dev/null 2>&1; then
  NODE_DIR=.services/node
  mkdir -p "$NODE_DIR"
  [ -f "$NODE_DIR/package.json" ] || (cd "$NODE_DIR" && npm init -y >/dev/null)
  if [ ! -x "$NODE_DIR/node_modules/.bin/azurite-blob" ]; then
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error azurite
  fi
else
  echo "npm not found: Azure tests will be skipped (or fail with CI=true)" >&2
fi

echo "== services: redis-server (apt)"
if command -v redis-server >/dev/null 2>&1; then
  :
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
else
  echo "apt-get unavailable or not root: skipping redis-server" >&2
fi
