#!/usr/bin/env bash
# The main job (README command 1), on an embedded default: nothing to download or configure.
# Today: set up the environment, generate the synthetic datasets in the four real formats
# (Cityscapes, Mapillary Vistas v1.2, GTSDB, OpenScapes-style tags) under data/synthetic,
# read them back with the project's readers and print a summary.
# Re-running reuses datasets already generated with the same settings.
#   HISEG_DEMO_PRESET=small bash scripts/demo.sh    # a quick variant
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "${ROOT}/scripts/setup_env.sh"
# shellcheck source=scripts/ros_env.sh
source "${ROOT}/scripts/ros_env.sh"
cd "${ROOT}"
exec "${HISEG_VENV}/bin/python" -m training.demo \
  --data "${HISEG_DEMO_DATA:-${ROOT}/data/synthetic}" \
  --preset "${HISEG_DEMO_PRESET:-large}" "$@"
