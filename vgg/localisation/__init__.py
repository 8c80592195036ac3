"""Appendix A: localisation (boxes, annotations, the box-regression net, its protocols)."""
