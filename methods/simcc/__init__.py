"""SimCC / SimDR (Li et al., ECCV 2022): per-joint 1-D coordinate classification, registered as ``simcc``."""
