"""What every stage runs on: atomic files and safe loading (`checkpoint`), process groups
(`distributed`), the arithmetic (`precision`), stop signals and exit statuses (`stop_signals`),
and checked TOML files (`toml_tables`). Kept free of heavy imports: `python -m vgg` loads
`stop_signals` before torch."""
