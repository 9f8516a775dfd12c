"""Workstation / cluster side of hiseg_ros: datasets, pseudo labels, losses, training, export.

Never imported by the runtime package ``hiseg_ros``; run its commands from the
repository root with ``python -m training.<command>``.
"""
