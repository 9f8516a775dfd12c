"""Workstation / cluster side of hiseg_ros: data, labels, fitting, evaluation, export, jobs.

Never imported by the runtime package ``hiseg_ros``; run its commands from the repository root
with ``python -m training.<package>.<command>`` (``python -m training.export`` for the export).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The source tree's root: configs, scripts and the default data / run folders live below it."""
