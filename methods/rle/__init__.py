"""RLE — residual log-likelihood estimation (Li et al., ICCV 2021), registered as ``rle``."""
