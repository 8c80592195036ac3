"""One training run (Sect. 3.1): its settings and identity (`run_config`, `identity`), its first
weights (`starting_weights`), the run (`train`), its epochs and steps (`train_loop`, `train_step`),
per-epoch validation and the learning-rate schedule (`validation`, `schedule`), and its folder's
state (`run_state`)."""
