"""Labels: native annotations turned into per-classifier training targets, and pseudo per-pixel
labels from weak annotations (boxes, image-level tags)."""
