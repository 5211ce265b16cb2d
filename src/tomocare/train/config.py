"""Settings of a training run, validated (pydantic) and saved beside the model."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tomocare.nn.architecture import UNetConfig

#: What ``device`` may be (``tomocare.nn.device.pick_device`` checks that it is there).
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
# Settings a resumed run may change; every other one must match the checkpoint.
RESUMABLE = frozenset({"max_steps", "time_limit", "patience", "device", "threads", "prefetch", "progress"})
# Settings the training plan chooses when they are not given (tomocare.train.plan).
PLANNED = ("patch_size", "batch_size", "lr", "steps_per_epoch", "n_patches", "n_val_patches", "precision")


class TrainConfig(BaseModel):
    """Training of a U-Net: Noise2Noise on even/odd halves (the default), or supervised on
    (input, target) pairs such as a simulated noisy volume and its clean one (``mode``).

    Patch size, batch size, learning rate, step count, validation size and precision are
    planned from a timed trial on the device and the time budget unless given
    (``tomocare.train.plan``); the values below are then only the fallbacks.

    ``ndim: 2`` trains a 2-D U-Net on stacks of images (n, y, x): patches are p×p crops of
    single images, by default 1000 of 128² per stack as in the cryo-CARE paper's P2P runs.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["noise2noise", "supervised"] = Field(
        "noise2noise", description="noise2noise: even/odd halves predict each other; supervised: input -> target "
        "pairs (e.g. a simulated noisy volume and its clean one), never swapped, validated against the target")
    ndim: Literal[2, 3] = Field(3, description="3: tomograms (z, y, x); 2: stacks of images (n, y, x)")
    # data
    patch_size: int = Field(64, ge=4, description="edge of the cubic patches, voxels "
                            "(planned: the largest step the budget affords ~3000 of)")
    n_patches: int = Field(1200, ge=1, description="training patches per tomogram (planned: each seen about twice)")
    n_val_patches: int | None = Field(None, ge=1, description="validation patches per tomogram "
                                      "(planned: validation within 5% of the budget)")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="validation slab: this end fraction of the y axis")
    batch_size: int = Field(16, ge=1, description="patches per step (planned with patch_size)")
    flip: bool = Field(True, description="random flips along each axis (keep the missing wedge)")
    swap: bool = Field(True, description="randomly swap the even and odd halves as input and target "
                      "(noise2noise; supervised pairs are never swapped)")
    rot90: bool = Field(False, description="random quarter turns in the y-x plane (move the missing wedge)")
    prefetch: int = Field(4, ge=1, description="batches being extracted ahead of training")
    normalization: Literal["dataset", "per-volume"] = Field(
        "dataset", description="dataset: one mean and std over all training volumes, applied to every input at "
        "prediction; per-volume: each pair by its input's own, and each input at prediction by its own (a model "
        "for data of any scale, such as the shipped general one)")
    init: str | None = Field(None, description="start from this model's weights (a model directory, or 'general' "
                             "for the shipped one): fine-tuning; the network is that model's")
    # network
    depth: int = Field(2, ge=1, le=6)
    # 16 x 2 keeps the most detail at low SNR; 8 channels x 1 convolution predicts 4.9x faster with
    # PSNR 38.56 / 37.06 dB at SNR 0.1 / 0.05 (16 x 2: 38.29 / 37.48) but FSC 0.5 against the truth
    # 37.5 A instead of 21.9 at SNR 0.05 (benchmarks/quality.py, 600 s of CPU training; README)
    base_channels: int = Field(16, ge=1)
    n_conv: int = Field(2, ge=1, le=4,
                        description="convolutions per level; fewer shrink the receptive field, so the halo")
    residual: bool = Field(False, description="add the input to the output; plain nets learned faster in short "
                           "CPU runs (benchmarks/unet_tradeoff.py)")
    upsample: Literal["nearest", "linear"] = "nearest"
    architecture: Literal["unet", "autoencoder"] = Field("unet", description="unet: skip connections from each "
                                                         "encoder level to the decoder; autoencoder: the same "
                                                         "network without them (a baseline)")
    # optimisation
    loss: Literal["mse", "l1", "ssim"] = Field("mse", description="training and validation loss: mse (mean squared "
                                               "error), l1 (mean absolute error) or ssim (1 - SSIM, Gaussian window "
                                               "of sigma 1.5, 11 voxels wide: patches must be wider)")
    # adversarial training (supervised only): the U-Net is the generator of a conditional GAN
    adversarial: Literal["none", "gan", "wgan-gp"] = Field(
        "none", description="add a critic's loss to the pixel loss (supervised only): gan (pix2pix: conditional "
        "PatchGAN, cross-entropy) or wgan-gp (Wasserstein critic with gradient penalty)")
    # pix2pix weighted pixel L1 100 : adversarial 1; on normalised patches the pixel losses are
    # O(0.1-1) like the cross-entropy, so the same 1 : 100 keeps the pixel loss in charge of content
    adversarial_weight: float = Field(0.01, gt=0, description="weight of the adversarial loss, the pixel loss's "
                                      "being 1 (pix2pix's 1 : 100)")
    gp_weight: float = Field(10.0, ge=0, description="WGAN-GP gradient penalty weight (lambda)")
    critic_steps: int = Field(1, ge=1, le=10, description="critic updates per generator step, on the same batch "
                              "(pix2pix 1; the WGAN-GP paper 5, 5x the critic's cost: 1 fits CPU budgets)")
    critic_channels: int = Field(16, ge=1, le=256, description="channels of the critic's first layer "
                                 "(pix2pix 64 in 2-D; doubling per strided layer up to 8x)")
    lr: float = Field(4e-4, gt=0, description="peak learning rate (planned: 1e-3 x sqrt(batch / 8))")
    schedule: Literal["cosine", "plateau"] = Field("cosine", description="cosine: warm-up, then decay to the end of "
                                                   "the budget; plateau: halve on a plateau of the validation loss")
    warmup: float = Field(0.05, ge=0, lt=1, description="warm-up share of the run (cosine schedule)")
    max_steps: int = Field(20_000, ge=1, description="training steps at most (planned: what the budget affords)")
    steps_per_epoch: int = Field(200, ge=1, description="training steps between validations and checkpoints "
                                 "(planned: a tenth of the run)")
    time_limit: float | None = Field(None, gt=0, description="wall-clock seconds for the whole run, everything counted "
                                     "(default 3600)")
    patience: int = Field(10, ge=1, description="epochs without a better validation loss before stopping")
    lr_patience: int = Field(5, ge=1, description="epochs without a better validation loss before reducing lr "
                             "(plateau schedule)")
    lr_factor: float = Field(0.5, gt=0, lt=1)
    min_lr: float = Field(1e-6, ge=0)
    seed: int = 0
    # machine
    device: str = Field("auto", description="device training runs on: 'auto' (CUDA when present), 'cpu', 'cuda' "
                        "or 'cuda:N'")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="network arithmetic; auto: bf16 where the "
                                                       "device has fast bf16 (CUDA, CPUs with AVX-512 BF16 or AMX), "
                                                       "else fp32")
    threads: int | None = Field(None, ge=1,
                                description="torch threads for training (default: all cores of this process)")
    progress: bool = Field(True, description="show a progress bar (else log lines only)")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError(f"unknown device {value!r} (use auto, cpu, cuda or cuda:N)")
        return value

    @model_validator(mode="after")
    def _supervised_never_swaps(self) -> TrainConfig:
        if self.mode == "supervised":
            if self.swap and "swap" in self.model_fields_set:
                raise ValueError("swap exchanges input and target, which supervised training never does: "
                                 "leave swap out or set it false")
            self.swap = False
        return self

    @model_validator(mode="after")
    def _adversarial_is_supervised(self) -> TrainConfig:
        if self.adversarial != "none" and self.mode != "supervised":
            raise ValueError(f"adversarial {self.adversarial!r} needs supervised training (--input/--target): "
                             "a critic of noisy halves would teach the noise")
        return self

    @model_validator(mode="after")
    def _patch_fits_network(self) -> TrainConfig:
        if self.ndim == 2:  # the paper's 2-D defaults, unless given
            if "patch_size" not in self.model_fields_set:
                self.patch_size = 128
            if "n_patches" not in self.model_fields_set:
                self.n_patches = 1000
        factor = 2**self.depth
        if self.patch_size % factor:
            raise ValueError(f"patch_size {self.patch_size} must be a multiple of 2**depth = {factor}")
        if self.loss == "ssim" and self.patch_size <= 10:
            raise ValueError(f"loss ssim needs patches wider than its 11-voxel window, got patch_size "
                             f"{self.patch_size}")
        return self

    def network(self) -> UNetConfig:
        """The architecture these settings describe."""
        return UNetConfig(ndim=self.ndim, depth=self.depth, base_channels=self.base_channels, n_conv=self.n_conv,
                          residual=self.residual, upsample=self.upsample, skips=self.architecture == "unet")

    @property
    def roles(self) -> tuple[str, str]:
        """What the two volumes of a pair are: (even, odd) halves, or (input, target)."""
        return ("input", "target") if self.mode == "supervised" else ("even", "odd")

    @property
    def val_patches(self) -> int:
        """Validation patches per tomogram."""
        return self.n_val_patches or max(1, round(self.n_patches * self.val_fraction))
