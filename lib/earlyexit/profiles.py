"""Profiles: named sets of parameter overrides per notebook, all in this one file.

- ``smoke``: a tiny CIFAR-10 subset and one epoch; seconds per notebook; what the tests run.
- ``cpu``: full CIFAR-10 (the JPEG copy) at reduced width on a 2-core CPU; the committed reference
  run. A notebook's own parameters cell holds its cpu values, so the cpu entries are usually empty.
- ``paper``: the papers' architectures, data sets and schedules; needs a GPU and downloads.
  ``python -m earlyexit.reproduce --profile paper --dry-run`` builds all of it without training.
"""
from __future__ import annotations

PROFILE_NAMES = ("smoke", "cpu", "paper")

# A smoke run trains on 512 images of the CIFAR-10 copy and tests on 500.
_SMOKE_DATA = {"train_size": 512, "val_size": 256, "test_size": 500}

PROFILES: dict[str, dict[str, dict]] = {
    "00_primer": {
        "smoke": {**_SMOKE_DATA, "width": 0.25, "epochs": 1, "batch_size": 128},
        "cpu": {},
        "paper": {"backbone": "resnet18_cifar", "width": 1.0, "epochs": 200, "batch_size": 128,
                  "lr": 0.1, "label_smoothing": 0.0, "exit_weights": "uniform", "bf16": False,
                  "channels_last": False},
    },
}
