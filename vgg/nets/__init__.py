"""The networks of Table 1 (`configs`, `models`), their initialisation (Sect. 3.1), their size
(`complexity`, Table 2), weight files and torchvision interchange (`weights`, `torchvision_compat`),
and trained nets loaded for use (`trained`). Nets never import training."""
