"""Training: the loop, EMA, lr schedules, checkpoints/resume, validation, metrics, distributed.

``from ditscale.train import TrainConfig, load_train_config`` does not import torch;
``ditscale.train.train(cfg, out_dir)`` (the loop) imports it on first use.
"""

from ditscale.train.config import (  # noqa: F401
    OptimConfig,
    TrainConfig,
    ValConfig,
    load_train_config,
    preset_names,
)


def __getattr__(name):  # lazy torch import
    if name == "train":
        from ditscale.train.loop import train  # lazy: torch; train.config users stay torch-free

        return train
    raise AttributeError(name)
