#!/usr/bin/env bash
# Train on GPUS GPUs of this machine with torchrun (DDP, SyncBN):
#   tools/dist_train.sh CONFIG GPUS [tools/train.py options]
# PORT (default 29500) must differ between jobs sharing a machine; PYTHON picks
# the interpreter (default: python).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [options for tools/train.py]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
exec "${PYTHON:-python}" -m torch.distributed.run --nproc_per_node="$GPUS" --master_port="${PORT:-29500}" \
    "$(dirname "$0")/train.py" "$CONFIG" "$@"
