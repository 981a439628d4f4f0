#!/usr/bin/env bash
# Evaluate on GPUS GPUs of this machine with torchrun (each image once, metrics summed):
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py options]
# PORT (default 29500) must differ between jobs sharing a machine; PYTHON picks
# the interpreter (default: python).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [options for tools/test.py]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec "${PYTHON:-python}" -m torch.distributed.run --nproc_per_node="$GPUS" --master_port="${PORT:-29500}" \
    "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" --launcher torchrun "$@"
