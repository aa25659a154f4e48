"""Training: NetVLAD models, datasets, weakly supervised training and evaluation (needs the
`train` extra)."""
