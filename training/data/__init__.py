"""Data: dataset readers in the real on-disk formats, synthetic scenes written in those formats,
augmentation and crop sampling, and the per-batch dataset mix."""
