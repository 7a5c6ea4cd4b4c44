"""One module per notebook, named like the notebook without its number (01_class_exclusion ->
studies.class_exclusion): its training plan, evaluation, claims, figures and conclusions, built on the
methods in ``earlyexit.methods`` and the core. Each has ``plan(**parameters) -> list[RunSpec]``: the
training runs the notebook needs, which the notebook, ``prepare`` and ``reproduce --dry-run`` call with its
parameters. ``reference`` holds the shared reference networks; ``claims``, ``plots`` and ``report`` the
claim rows, the figure style and the metrics files every study writes."""
