#!/usr/bin/env bash
# Spark's GPU discovery script for a worker: the GPUs this container sees, as Spark's resource JSON
# ({"name": "gpu", "addresses": ["0", "1", ...]}). Set as spark.worker.resource.gpu.discoveryScript.
set -euo pipefail
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed -e 's/^ *//' -e 's/.*/"&"/' | paste -sd, -)
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
