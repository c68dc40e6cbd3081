"""Ray Tune sweeps of the ``tune`` group: search spaces, multi-seed trials, resume, best config."""
