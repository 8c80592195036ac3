"""The paper's test protocols (Sect. 3.2): dense, multi-crop and multi-scale (`protocols`), the
evaluation loop (`evaluate`), per-image score files and fusion (`scores`), errors and their
intervals (`metrics`, `statistics`), and prediction for image files (`predict`)."""
