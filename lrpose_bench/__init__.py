"""lrpose-bench: a benchmark suite for low-resolution human pose estimation.

Reproduces and extends *Low-resolution Human Pose Estimation* (Wang, Zhang, Zhu, Ge), whose method
is CAL (Confidence-Aware Learning), next to HRNet/SimpleBaseline heatmaps, DARK, UDP and SPSR+pose.
"""

__version__ = "0.1.0"
