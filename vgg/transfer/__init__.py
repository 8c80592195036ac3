"""Appendix B: the nets' features on other datasets (descriptors, datasets, linear SVMs, metrics)."""
