"""The proposed method of the paper: CAL (Confidence-Aware Learning)."""
