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
# The shared reference network's smoke values: identical in every notebook, so notebooks share trainings
# in a smoke run as they do in the cpu profile (tests/test_reference.py checks it).
_SMOKE_REFERENCE = {**_SMOKE_DATA, "width": 0.125, "epochs": 1, "batch_size": 128}

PROFILES: dict[str, dict[str, dict]] = {
    "00_primer": {
        "smoke": {**_SMOKE_REFERENCE, "seeds": [0, 1]},
        "cpu": {},
        # not a paper's experiment: the same multi-exit recipe on a full-width ResNet-18, longer, in float32
        "paper": {"backbone": "resnet18_cifar", "width": 1.0, "epochs": 200, "batch_size": 128,
                  "lr": 0.1, "bf16": False, "channels_last": False},
    },
    "02_e2cm": {
        "smoke": {**_SMOKE_REFERENCE, "seeds": [0],
                  "n_thresholds": 300, "head_patience": 1, "head_max_epochs": 2, "unsup_datasets": ["mnist"],
                  "unsup_seeds": [0, 1], "unsup_epochs": 1, "unsup_channels": [8, 8, 16],
                  "unsup_train_size": 1000, "unsup_test_size": 500},
        "cpu": {},
        # MobileNetV3 / ResNet on CIFAR-100 and KMNIST with the official code's settings (Adam 1e-3,
        # 300 epochs, batch 256, U(0,1) thresholds; E2CM on flattened maps as in every profile); no
        # EfficientNet backbone exists
        "paper": {"datasets": ["cifar100", "kmnist"], "backbones": ["mobilenetv3_cifar", "resnet50_cifar", "resnet18_cifar"],
                  "widths": [1.0, 1.0, 1.0], "epochs": 300, "bf16": False, "batch_size": 256, "optimizer": "adam",
                  "lr": 1e-3, "weight_decay": 0.0, "label_smoothing": 0.0, "channels_last": False,
                  "threshold_space": "uniform", "n_thresholds": 10000, "head_patience": 10, "head_max_epochs": 100,
                  "head_inputs": "live",
                  "unsup_seeds": [0, 1, 2, 3, 4], "unsup_epochs": 50},
    },
    "01_class_exclusion": {
        "smoke": {**_SMOKE_DATA, "epochs": 1, "batch_size": 128, "check_images": 500, "seeds": [0, 1],
                  "setups": [{"name": "vgg13_c10", "backbone": "vgg13", "dataset": "cifar10", "width": 0.125,
                              "bc_tolerance": 0.001, "cr_tolerance": 0.01}]},
        "cpu": {},
        # The authors' set-ups and schedules (their code's configs), each set-up's own networks, CR trained with
        # their CR loss; every method picks from their two rates (0.02: BC, 0.1: plain and CR) where the
        # set-ups share one schedule. MultiStep is not in the training loop, so cosine without warm-up stands
        # in; AlexNet starts from scratch (no ImageNet weights here).
        "paper": {"reference": False, "cr_loss": "authors", "val_size": 10000, "epochs": 200, "batch_size": 100,
                  "lrs": [0.02, 0.1], "warmup": 0.0, "schedule": "cosine", "crop_pad": 4, "bf16": False,
                  "channels_last": False, "seeds": [0, 1, 2],
                  "setups": [
                      {"name": "vggsmall_c10", "backbone": "vgg_small", "dataset": "cifar10", "width": 1.0, "pool": 1,
                       "bc_tolerance": 0.001, "cr_tolerance": 0.01},
                      {"name": "vggsmall_c100", "backbone": "vgg_small", "dataset": "cifar100", "width": 1.0, "pool": 2,
                       "bc_tolerance": 0.008, "cr_tolerance": 0.015},
                      {"name": "alexnet_c10", "backbone": "alexnet", "dataset": "cifar10", "width": 1.0, "pool": 1,
                       "image_size": 224, "epochs": 50, "lrs": [0.001], "weight_decay": 0.0,
                       "crop_pad": 0, "flip": False, "bc_tolerance": 0.002, "cr_tolerance": 0.01},
                      {"name": "resnet50_c100", "backbone": "resnet50_cifar", "dataset": "cifar100", "width": 1.0,
                       "pool": 1, "epochs": 400, "lrs": [0.02], "weight_decay": 0.005,
                       "bc_tolerance": 0.005, "cr_tolerance": 0.005}]},
    },
    "03_differentiable_branching": {
        # the paper's recipe at smoke size, a three-value grid (the lambda claim needs three); the reference
        # recipe at the shared smoke reference's values and one seed (05's smoke run finds its first gated network)
        "smoke": {**_SMOKE_REFERENCE, "seeds": [0, 1], "lambda_grid": [0.0, 1e-3, 0.1], "bnet_random": 300,
                  "latency_images": 40, "latency_repeats": 1,
                  "reference_recipe": {"width": 0.125, "epochs": 1, "batch_size": 128, "optimizer": "sgd",
                                       "schedule": "onecycle", "lr": 0.2, "weight_decay": 5e-4, "augment": True,
                                       "headline_lambda": 0.1, "seeds": [0]}},
        "cpu": {},
        # Three backbones and data sets at full width with the paper's optimiser (Adam 1e-3, constant, batch
        # 128, no augmentation), separate networks per notebook, every lambda trained from scratch; no
        # shared reference network.
        "paper": {"datasets": ["cifar10", "cifar100", "cinic10"], "backbones": ["vgg13", "resnet18_cifar", "alexnet_cifar"],
                  "reference_recipe": None, "width": 1.0, "epochs": 50, "batch_size": 128, "optimizer": "adam",
                  "schedule": "constant", "lr": 1e-3, "weight_decay": 0.0, "augment": False,
                  "exit_after": {"alexnet_cifar": [0, 1, 2, 3, 4]}, "head_features": "conv",
                  "head_width": 128, "head_pool": 2, "bf16": False, "channels_last": False},
    },
    "05_benchmark": {
        # the reference network at smoke size (its forms shared with 00-03); small searches and bootstraps
        "smoke": {**_SMOKE_REFERENCE, "seeds": [0, 1], "vectors": 200, "shared_grid": 11, "eenet_budgets": 3,
                  "scheduler_seeds": [0], "scheduler": {"patience": 30}, "recipe_optimizers": ["adamw"],
                  "recipe_lrs": [1e-3, 1e-2], "recipe_epochs": [10, 30], "bootstrap_draws": 200,
                  "speed_repeats": 1, "speed_rows": 8},
        "cpu": {},
        # the primer's paper-profile network (full-width ResNet-18, 200 epochs, float32) in every form
        "paper": {"backbone": "resnet18_cifar", "width": 1.0, "epochs": 200, "batch_size": 128, "lr": 0.1,
                  "bf16": False, "channels_last": False,
                  "class_exclusion": {"setup": "resnet18_c10", "bce_mode": "uniform_scale", "rho": None}},
    },
    "04_eenet": {
        # the reference network at smoke size; two training seeds so the seed aggregation runs; a tiny recipe grid
        "smoke": {**_SMOKE_REFERENCE, "seeds": [0, 1], "num_budgets": 3,
                  "scheduler_seeds": [0], "recipe_optimizers": ["adamw"], "recipe_lrs": [1e-3, 1e-2],
                  "recipe_epochs": [10, 30], "scheduler": {"patience": 30}, "bootstrap_draws": 200,
                  "auroc_draws": 20, "baseline_vectors": 200},
        "cpu": {},
        # The paper's ResNet56_3 (bottleneck [9,9,9], planes 16/32/64; exits after groups 1 and 2) and
        # DenseNet-BC [6,12,24,16], k=12 (exits after transitions 1-3), one per training seed. Their exit head
        # has 3 conv layers; the conv head (one conv3x3) stands in. Step decay (x0.1 at epochs 50, 100) is not
        # a TrainConfig schedule: cosine stands in. Up to 10 scheduler fits per budget, as released. These networks
        # have the paper's exit counts (3 and 4), so the headline keeps every exit.
        "paper": {"settings": [
                      {"name": "resnet56_3_cifar10", "dataset": "cifar10", "backbone": "resnet56_bottleneck",
                       "width": 1.0, "exit_after": [0, 1], "head": "conv", "head_options": {"width": 64, "pool": 1}},
                      {"name": "densenet121_4_cifar100", "dataset": "cifar100",
                       "backbone": "densenet_bc_cifar", "width": 1.0, "exit_after": [0, 1, 2], "head": "conv",
                       "head_options": {"width": 64, "pool": 1}}],
                  "epochs": 150, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "schedule": "cosine",
                  "bf16": False, "channels_last": False, "num_budgets": 10, "scheduler_seeds": list(range(10)),
                  "recipe_lrs": [3e-5, 3e-4, 3e-3, 1e-2], "headline_exit_costs": None},
    },
    "06_own_network": {
        # one epoch on the smoke subset, small searches, one scheduler seed, short timing
        "smoke": {**_SMOKE_DATA, "epochs": 1, "head_epochs": 2, "vectors": 200, "grid": 11, "eenet_budgets": 2,
                  "scheduler_seeds": [0], "eenet_epochs": 30, "bootstrap_draws": 200, "speed_repeats": 1,
                  "speed_rows": 8},
        "cpu": {},
        # not a paper's experiment: the same model at full length on full-size inputs is the user's own call
        "paper": {"epochs": 60, "bf16": False, "channels_last": False},
    },
}
