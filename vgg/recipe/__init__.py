"""The training and test recipe as data: the paper's settings in one place, and the profiles
(`paper`, `smoke`, `ci`, experiments/profiles.toml) that map them onto a scale (`profiles`)."""
