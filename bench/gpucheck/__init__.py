"""The parts of ``bench/gpu_check.py``: the rows and their report (:mod:`.report`), the inference
measurements (:mod:`.inference`) and the training measurements (:mod:`.training`)."""
