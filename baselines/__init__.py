"""Compared methods: Gaussian heatmaps (HRNet/SimpleBaseline), DARK, UDP, SPSR+pose."""
