"""Names of the pseudo-label pipeline's switchable steps, shared by :class:`GeneratorConfig` and the command line.

A module of its own so that ``python -m training.labels.pseudo_labels`` can name them without
importing the generator (and torch) before it needs to.
"""

STAGES = ("saliency", "erasing", "crf", "regions", "decoder", "segmenter")  # GeneratorConfig's ``stages`` keys
# off unless named; written to settings only when on (old folders resume)
OPT_IN_STAGES = ("regions", "decoder", "segmenter")
REGION_MODES = ("maps", "vote", "components", "diffusion")  # regions.mode (training.labels.pseudo_labels.regions)
