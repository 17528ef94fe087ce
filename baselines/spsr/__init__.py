"""SPSR+pose (paper Sec. 5.4, Table 2): SPSR ×4 super-resolution (Ma et al., CVPR 2020) of the 64×48
person crop to 256×192 before a pose model trained at 256×192, and the bicubic control.

Modules: ``generator`` (SPSRNet with basicsr's RRDB), ``gradient`` (gradient maps), ``train_sr``
(SR data, losses, training, caching, SR quality), ``metrics`` (PSNR/SSIM on Y), ``method``
(``spsr+hrnet``, ``spsr+udp``, ``bicubic+hrnet``, ``bicubic+udp``), ``_basicsr`` (the only module
that imports basicsr). Importing this package does not import basicsr.
"""
