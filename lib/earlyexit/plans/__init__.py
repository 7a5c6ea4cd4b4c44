"""One module per notebook, named like the notebook without its number (01_class_exclusion ->
plans.class_exclusion). Each has ``plan(**parameters) -> list[RunSpec]``: the training runs the
notebook needs. The notebook calls it with its parameters, and ``reproduce --dry-run`` calls it to
build every model and data spec of a profile without training."""
