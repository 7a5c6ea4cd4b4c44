"""The four papers' methods, each applicable to any multi-exit network (a ``MultiExitNet``, a registry
backbone or a wrapped model of your own): its training loss, its exit rule and what it fits on validation
outputs. Nothing here plots, tabulates or knows a notebook; the notebooks' studies live in
``earlyexit.studies``."""
