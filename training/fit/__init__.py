"""Fitting the network: the training configuration, the hierarchical loss, the training loop
(one process or DDP) and its logging."""
