"""The names and defaults the commands and the package share, in one place and importable without torch
or OpenCV (so `streamrestore --help` stays quick): tasks, network sizes, noise policies, devices, the
held-out split."""
from __future__ import annotations

TASKS = ("derain", "denoise", "deblur", "lowlight")  # degradations.TRAIN_SAMPLERS and friends, one each
SIZE_NAMES = ("small", "base")  # network.SIZES: `small` the CPU default, `base` the GPU size
NOISE_POLICIES = ("fixed", "fresh", "zero")  # the z of Algorithm 3 frame after frame (sampler.NoisePolicy)
DEVICES = ("auto", "cpu", "cuda")
HOLDOUT_EVERY = 6  # train and eval hold out every 6th photograph of each --data folder, by name
