"""What a training run is: its settings and their defaults, in one place (plain data, no torch), read by
`streamrestore train` for its option defaults and by streamrestore.training.loop."""
from __future__ import annotations

from dataclasses import dataclass, field

STAGE_CHOICES = {"linear": ["linear"], "nonlinear": ["nonlinear"], "both": ["linear", "nonlinear"],
                 "baseline": ["baseline"]}


@dataclass
class TrainConfig:
    task: str
    size: str = "small"
    stages: list[str] = field(default_factory=lambda: ["linear", "nonlinear"])
    iters: int = 2000  # per stage
    batch: int = 8
    patch: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    lambda_og: float = 0.8
    lambda_perc: float = 0.125
    sampling_time_fraction: float = 0.4  # share of pairs with t_{n+1} at a time Algorithm 3 evaluates
    two_step_weight: float = 0.0  # weight of losses.two_step_loss in nonlinear fitting (0: the paper's loss only)
    seed: int = 0
    device: str = "cpu"
    warmup: int = 100  # iterations of linear learning-rate warm-up
    checkpoint_seconds: float = 120.0
    workers: int = 0  # processes drawing batches ahead (data.WorkerBatches); 0: drawn in the training process
    perceptual_weights: str | None = None
    clip_frames: int = 0  # > 0: temporal training on pseudo-clips of this many frames (recurrent model)
    sde_lambda: float = 10.0  # stationary std of the mean-reverting SDE in 8-bit levels (IR-SDE's lambda; 10 there)
    clear_share: float | None = None  # share of draws left undegraded (None: the task's degradations.CLEAR_SHARE)
    read_noise_only: bool = False  # denoise: Gaussian read noise alone (degradations.random_read_noise)
    detail_share: float = 0.0  # share of training crops that are the most detailed of data.DETAIL_CANDIDATES random ones
    history_lr_scale: float = 10.0  # the history convolution learns this much faster (and without decay)
    psnr_balance: float = 0.0  # > 0: each image's L1 to the clean image weighted by 1 / (its own L1 + this, in 8-bit
    # levels), as mean PSNR weighs images (losses.balanced_l1); 0: the plain mean L1 of IR-CM's L_OG
