#!/usr/bin/env bash
# The main job (README command 1), on an embedded default: nothing to download or configure.
# From nothing to a segmented drive with a report (python -m training.jobs.main_job, ~20 min on 2 quiet cores):
#   set up the environment (pinned venv), DDS on loopback only (scripts/ros_env.sh), then
#   1 generate the synthetic datasets in the four real formats under data/synthetic,
#   2 read them back with the project's readers, 3 train the default small model
#   (config/training/demo.yaml) into runs/demo/train, 4 export it to runs/demo/model.onnx,
#   5 render held-out synthetic scenes as a drive bag runs/demo/drive, 6 replay it live through
#   the node and evaluate it (runs/demo/live: report.html, metrics.json, output bag), 7 print the
#   report's place and headline numbers.
# Re-running reuses every stage whose outputs exist and were made from the same settings.
#   HISEG_DEMO_PRESET=small bash scripts/demo.sh    # smaller datasets
#   bash scripts/demo.sh --iterations 50 --skip-live # other options: python -m training.jobs.main_job --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "${ROOT}/scripts/setup_env.sh"
# shellcheck source=scripts/ros_env.sh
source "${ROOT}/scripts/ros_env.sh"
cd "${ROOT}"
exec "${HISEG_VENV}/bin/python" -m training.jobs.main_job \
  --data "${HISEG_DEMO_DATA:-${ROOT}/data/synthetic}" \
  --preset "${HISEG_DEMO_PRESET:-large}" "$@"
