"""The suite: the paper's experiments run with the core (`vgg`), from experiments/*.toml to
results/*.csv and reports/*.md. The core never imports it (tests/test_layers.py)."""
