"""The one-step SlateQ that was ``algo=slateq``'s default before ``targets=monte_carlo`` (issue 17).

Benchmarks whose committed tables were measured with it add these overrides to ``algo=slateq`` so
that a rerun reproduces what is committed (run as ``python benchmarks/<script>.py``, whose directory
is on ``sys.path``).
"""

ONE_STEP_SLATEQ = ["algo.training.targets=td", "algo.training.gamma=0.99", "algo.training.lr=0.001"]
