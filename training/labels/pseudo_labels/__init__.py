"""Pseudo per-pixel ground truth from image-level tags (Xu et al.; L-Net class-agnostic transfer).

Pipeline per image: a multi-label tag classifier (:mod:`.classifier`) gives Grad-CAM attention maps
per present tag (:mod:`.gradcam`); a class-agnostic saliency map (:mod:`.saliency`: a learned
foreground segmenter trained on the per-pixel datasets, or OpenCV's training-free detectors) is
made more complete by iterative erasing (:mod:`.erasing`); Algorithm 1 of Xu et al. combines both
(:mod:`.algorithm1`) and a dense CRF refines the result (:mod:`.crf`); optionally classes are then
decided per region instead of per pixel (:mod:`.regions`: superpixels or connected salient
regions). :mod:`.generator` plugs the
result into the training seam (:class:`training.labels.node_distribution.PseudoLabelGenerator`) and
``python -m training.labels.pseudo_labels`` precomputes label files for a whole dataset.
"""

from training.labels.pseudo_labels.algorithm1 import Algorithm1Config, algorithm1, cam_only_labels, combined_map
from training.labels.pseudo_labels.crf import CRFConfig, crf_refine
from training.labels.pseudo_labels.erasing import ErasingConfig, iterative_saliency
from training.labels.pseudo_labels.gradcam import grad_cam

__all__ = [
    "Algorithm1Config",
    "CRFConfig",
    "ErasingConfig",
    "algorithm1",
    "cam_only_labels",
    "combined_map",
    "crf_refine",
    "grad_cam",
    "iterative_saliency",
]
