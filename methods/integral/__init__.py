"""Integral pose regression (Sun et al., ECCV 2018) with the optional DSNT regulariser (Nibali et al.),
registered as ``integral``."""
