#!/usr/bin/env bash
# Copies the generated CRDs into the Helm chart so the chart never ships a
# stale schema. `make manifests` runs it; `make verify` fails on drift.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=charts/attune/crds
mkdir -p "${dest}"
rm -f "${dest}"/*.yaml
cp config/crd/bases/*.yaml "${dest}/"
