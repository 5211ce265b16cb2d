"""The noise synthesiser: a WGAN-GP that learns to make noise like the background patches of real data.

As NT2C's, the generator has six transposed convolutions with batch norm and LeakyReLU and the
critic six convolutions with LeakyReLU. Two differences, both so that any size of noise can be
made and its spectrum has no artefacts: the generator's transposed convolutions have stride 1
and start from a latent of full resolution (``white`` channels of white noise per voxel, plus
``style`` channels constant over a sample, which let it vary the noise's character from patch to
patch, as the real noise varies with ice thickness), instead of upsampling a 1 × 1 latent (whose
stride-2 layers print a checkerboard in the spectrum); and the critic has no batch norm, because
the gradient penalty is per sample (Gulrajani et al. 2017). The critic's last convolution gives
a map of scores, averaged per sample.

Training is WGAN-GP (``critic_steps`` critic updates per generator update, penalty weight 10,
Adam 1e-4, betas (0, 0.9), as the paper) on the patches about their own plane (the ice's level
and slope are signal: :func:`~tomocare.nt2c.background.about_plane`), standardised by their
overall mean and standard deviation, for a wall-clock budget, resumable from ``checkpoint.pt``; the synthesiser
is saved as ``synthesiser.pt`` (generator weights) and ``synthesiser.json`` (settings, scale,
history, calibration) in its directory. On a CPU budget the WGAN-GP gets the noise's character
right before its exact spectrum, so the trained generator is calibrated (:func:`calibrate`): a
gain per frequency (not per radius: tomographic noise is anisotropic) makes the power spectrum of
its output that of the training patches.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tomocare.errors import TomocareError
from tomocare.io.atomic import write_atomic
from tomocare.train.adversarial import gradient_penalty, wgan_critic_loss, wgan_generator_loss

log = logging.getLogger(__name__)
progress_log = logging.getLogger("tomocare.progress")
WEIGHTS, META, CHECKPOINT = "synthesiser.pt", "synthesiser.json", "checkpoint.pt"
LAYERS = 6
MARGIN = LAYERS  # each kernel-3 layer reaches one voxel further: generate this much more on each side


@dataclass(frozen=True)
class SynthesiserConfig:
    """The synthesiser's network and training settings."""

    ndim: int = 3
    white: int = 8  # latent channels of white noise per voxel
    style: int = 4  # latent channels constant over a sample
    channels: int = 16  # generator width (critic: 16, 32, 64)
    batch_size: int = 16
    critic_steps: int = 5
    gp_weight: float = 10.0
    lr: float = 1e-4
    seed: int = 0
    time_limit: float = 120.0
    max_steps: int | None = None  # generator steps


class NoiseGenerator(nn.Module):
    """Latent (white + style channels, full resolution) -> noise, by six stride-1 transposed convolutions."""

    def __init__(self, config: SynthesiserConfig) -> None:
        super().__init__()
        conv = nn.ConvTranspose3d if config.ndim == 3 else nn.ConvTranspose2d
        norm = nn.BatchNorm3d if config.ndim == 3 else nn.BatchNorm2d
        layers: list[nn.Module] = []
        c_in = config.white + config.style
        for i in range(LAYERS):
            last = i == LAYERS - 1
            c_out = 1 if last else config.channels
            layers.append(conv(c_in, c_out, 3, stride=1, padding=1))
            if not last:
                layers += [norm(c_out), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c_out
        self.net = nn.Sequential(*layers)
        self.config = config

    def latent(self, n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        c = self.config
        white = torch.randn((n, c.white, *shape), generator=generator)
        style = torch.randn((n, c.style) + (1,) * len(shape), generator=generator).expand(n, c.style, *shape)
        return torch.cat([white, style], dim=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent)


class NoiseCritic(nn.Module):
    """Six convolutions (kernel 3; strides 2, 1, 2, 1, 2, 1; LeakyReLU 0.2, no normalisation) to a score map;
    the score of a sample is the map's mean."""

    def __init__(self, ndim: int = 3, channels: int = 16) -> None:
        super().__init__()
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        widths = [channels, channels, 2 * channels, 2 * channels, 4 * channels, 1]
        layers: list[nn.Module] = []
        c_in = 1
        for i, c_out in enumerate(widths):
            layers.append(conv(c_in, c_out, 3, stride=2 if i % 2 == 0 and i < 5 else 1, padding=1))
            if i < len(widths) - 1:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1).mean(1)


@dataclass
class Synthesiser:
    """A trained generator and the scale of the noise it was trained on (patches = mean + std · output)."""

    generator: NoiseGenerator
    mean: float
    std: float
    history: list[dict] = field(default_factory=list)
    gain: np.ndarray | None = None  # spectral calibration: amplitude gain per frequency of the patches' grid

    def sample(self, n: int, shape: tuple[int, ...], seed: int, *, calibrated: bool = True) -> np.ndarray:
        """``n`` samples of noise of ``shape`` in the data's units (n, *shape), float32, from ``seed``; with
        ``calibrated`` (and a calibration) each is filtered by the spectral gain (:func:`calibrate`)."""
        gain = self.gain if calibrated else None
        return np.stack([self.finish(y, shape, gain) for y in self.generate(n, shape, seed)])

    def generate(self, n: int, shape: tuple[int, ...], seed: int) -> Iterator[np.ndarray]:
        """The generator's raw outputs for ``n`` samples of ``shape`` plus the margin, standardised units; small
        samples are made in batches of about a million latent voxels."""
        self.generator.eval()
        rng = torch.Generator().manual_seed(seed)
        padded = tuple(s + 2 * MARGIN for s in shape)
        batch = max(1, 2**20 // int(np.prod(padded)))
        with torch.no_grad():
            for start in range(0, n, batch):
                yield from self.generator(self.generator.latent(min(batch, n - start), padded, rng))[:, 0].numpy()

    def finish(self, raw: np.ndarray, shape: tuple[int, ...], gain: np.ndarray | None) -> np.ndarray:
        """A raw output (:meth:`generate`) cropped to ``shape``, filtered by ``gain`` (if any; on the crop's own
        grid, so that a patch-sized sample's spectrum is its raw spectrum times the gain squared, exactly) and in
        the data's units."""
        core = raw[tuple(slice(MARGIN, MARGIN + s) for s in shape)]
        if gain is not None:
            core = spectral_filter(core, gain)
        return (core * self.std + self.mean).astype(np.float32)

    def save(self, directory: Path, extra: dict | None = None) -> None:
        buffer = io.BytesIO()
        torch.save(self.generator.state_dict(), buffer)
        write_atomic(directory / WEIGHTS, buffer.getvalue())
        gain = None if self.gain is None else np.asarray(self.gain, np.float64).tolist()  # float32 values, exact
        meta = {"config": asdict(self.generator.config), "mean": self.mean, "std": self.std, "gain": gain,
                "history": self.history, **(extra or {})}
        write_atomic(directory / META, json.dumps(meta, indent=2) + "\n")

    @classmethod
    def read(cls, directory: str | os.PathLike) -> Synthesiser:
        directory = Path(directory)
        try:
            meta = json.loads((directory / META).read_text())
            generator = NoiseGenerator(SynthesiserConfig(**meta["config"]))
            generator.load_state_dict(torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True))
            gain = None if meta.get("gain") is None else np.asarray(meta["gain"], np.float32)
            if gain is not None and gain.ndim != generator.config.ndim:
                raise ValueError(f"a calibration of {gain.ndim} dimensions for a {generator.config.ndim}-D generator "
                                 "(made by an older tomocare? train it again)")
            return cls(generator, float(meta["mean"]), float(meta["std"]), meta.get("history", []), gain)
        except FileNotFoundError as err:
            raise TomocareError(f"{directory}: not a noise synthesiser (no {Path(err.filename).name})") from None
        except Exception as err:
            raise TomocareError(f"{directory}: unreadable noise synthesiser ({type(err).__name__}: "
                                f"{' '.join(str(err).split())[:200]})") from None


def train_synthesiser(patches: np.ndarray, out_dir: str | os.PathLike, config: SynthesiserConfig,
                      *, resume: bool = False) -> Synthesiser:
    """Train the WGAN-GP on real noise ``patches`` (n, *patch) for ``config.time_limit`` seconds (or
    ``max_steps`` generator steps); save to ``out_dir`` (a checkpoint every ~30 s, resumed with ``resume``)."""
    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(patches) < 2:
        raise TomocareError(f"{out_dir}: {len(patches)} noise patch(es): too few to learn the noise from")
    from tomocare.nt2c.background import about_plane

    patches = about_plane(patches)
    data = torch.from_numpy(patches)
    mean, std = float(data.mean()), float(data.std())
    if not (math.isfinite(std) and std > 0):
        raise TomocareError(f"{out_dir}: the noise patches are constant or not finite")
    data = ((data - mean) / std).unsqueeze(1)
    torch.manual_seed(config.seed)
    generator, critic = NoiseGenerator(config), NoiseCritic(config.ndim)
    g_opt = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=(0.0, 0.9))
    c_opt = torch.optim.Adam(critic.parameters(), lr=config.lr, betas=(0.0, 0.9))
    rng = torch.Generator().manual_seed(config.seed)
    step, history = 0, []
    checkpoint = out_dir / CHECKPOINT
    if resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        generator.load_state_dict(state["generator"])
        critic.load_state_dict(state["critic"])
        g_opt.load_state_dict(state["g_opt"])
        c_opt.load_state_dict(state["c_opt"])
        rng.set_state(state["rng"])
        step, history = state["step"], state["history"]
        started -= state["elapsed"]
        log.info("resuming the noise synthesiser at step %d", step)
    shape = tuple(data.shape[2:])

    def batch() -> torch.Tensor:
        return data[torch.randint(len(data), (config.batch_size,), generator=rng)]

    def fake() -> torch.Tensor:
        return generator(generator.latent(config.batch_size, shape, rng))

    last_save, last_log = time.monotonic(), time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= config.time_limit or (config.max_steps is not None and step >= config.max_steps):
            break
        generator.train()
        for _ in range(config.critic_steps):
            real, made = batch(), fake().detach()
            loss_c = wgan_critic_loss(critic(real), critic(made)) + config.gp_weight * gradient_penalty(
                lambda _, x: critic(x)[:, None], real, real, made, rng)
            c_opt.zero_grad(set_to_none=True)
            loss_c.backward()
            c_opt.step()
        critic.requires_grad_(False)
        loss_g = wgan_generator_loss(critic(fake()))
        g_opt.zero_grad(set_to_none=True)
        loss_g.backward()
        g_opt.step()
        critic.requires_grad_(True)
        step += 1
        if not (math.isfinite(loss_c.item()) and math.isfinite(loss_g.item())):
            raise TomocareError(f"{out_dir}: the noise synthesiser's loss is not finite at step {step}")
        if step % 10 == 0:
            history.append({"step": step, "seconds": round(time.monotonic() - started, 1),
                            "critic": round(loss_c.item(), 5), "generator": round(loss_g.item(), 5)})
        now = time.monotonic()
        if now - last_log > 15:
            progress_log.info("noise synthesiser: step %d, %.0f s of %.0f, critic loss %.4g", step, now - started,
                              config.time_limit, loss_c.item())
            last_log = now
        if now - last_save > 30:
            _save_checkpoint(checkpoint, generator, critic, g_opt, c_opt, rng, step, history, now - started)
            last_save = now
    synthesiser = Synthesiser(generator, mean, std, history)
    synthesiser.gain = calibrate(synthesiser, patches, config.seed)
    synthesiser.save(out_dir, {"steps": step, "seconds": round(time.monotonic() - started, 1),
                               "patches": len(patches), "patch_shape": list(shape)})
    checkpoint.unlink(missing_ok=True)
    progress_log.info("noise synthesiser: %d steps in %.0f s on %d patches", step, time.monotonic() - started,
                      len(patches))
    return synthesiser


def calibrate(synthesiser: Synthesiser, patches: np.ndarray, seed: int, *, n: int = 1024) -> np.ndarray:
    """The spectral calibration of a trained generator: at every frequency of the training patches' grid, the
    amplitude gain sqrt(P_real / P_generated) (over ``n`` generated patches) that makes the generated noise's
    power spectrum that of the patches (the WGAN-GP, on a CPU budget, gets the noise's texture before its exact
    spectrum, and tomographic noise is anisotropic). A patch's mean (frequency 0) is not noise it learnt; a larger
    volume's lowest frequencies fall in that bin, so it takes the mean gain of its neighbours on each axis.
    With few patches one frequency's power is a poor estimate (its spread is 1/sqrt(patches)), so both spectra
    are first averaged over a box of neighbouring frequencies holding :data:`MIN_PERIODOGRAMS` in all."""
    from tomocare.nt2c.reweight import power_spectrum

    shape = tuple(patches.shape[1:])
    made = power_spectrum(synthesiser.sample(n, shape, seed + 7919, calibrated=False))
    target = power_spectrum(patches)
    width = _smoothing_width(len(patches), len(shape))
    if width > 1:
        made, target = _smooth_spectrum(made, width), _smooth_spectrum(target, width)
    gain = np.sqrt(target / np.maximum(made, 1e-30 * target.max()))
    first = np.eye(gain.ndim, dtype=int)
    gain.flat[0] = np.mean([gain[tuple(e)] for e in first] + [gain[tuple(-e)] for e in first[:-1]])
    return gain.astype(np.float32)


MIN_PERIODOGRAMS = 64  # per-frequency power estimates averaged into one calibration gain (spread 1/8 in power)


def _smoothing_width(patches: int, ndim: int) -> int:
    """The odd box width (in frequencies, per axis) whose box times ``patches`` holds MIN_PERIODOGRAMS."""
    width = math.ceil((MIN_PERIODOGRAMS / max(patches, 1)) ** (1 / ndim))
    return width + 1 - width % 2


def _smooth_spectrum(power: np.ndarray, width: int) -> np.ndarray:
    """A power spectrum (rfft layout) averaged over a ``width`` box of frequencies, frequency 0 left out (a
    patch's mean is no noise): the full axes wrap, the half axis mirrors at 0 and at the end."""
    from scipy.ndimage import uniform_filter

    weight = np.ones_like(power)
    weight.flat[0] = 0.0
    modes = ["wrap"] * (power.ndim - 1) + ["mirror"]
    total = uniform_filter(power * weight, width, mode=modes)
    count = uniform_filter(weight, width, mode=modes)
    return total / count


def spectral_filter(volume: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``volume`` filtered (circularly) by a gain given on the rfft grid of a d-voxel patch (``gain.shape`` =
    (d, ..., d/2 + 1)): each frequency of the volume's own grid takes the gain of the patch grid's nearest
    frequency. On stationary noise a circular filter leaves no edge: the result is noise of that spectrum."""
    d = gain.shape[0]
    index = np.ix_(*[np.rint(np.fft.fftfreq(n) * d).astype(int) % d for n in volume.shape[:-1]],
                   np.rint(np.fft.rfftfreq(volume.shape[-1]) * d).astype(int))
    axes = tuple(range(volume.ndim))
    return np.fft.irfftn(np.fft.rfftn(volume) * gain[index], s=volume.shape, axes=axes).astype(np.float32)


def _save_checkpoint(path: Path, generator, critic, g_opt, c_opt, rng, step, history, elapsed) -> None:
    buffer = io.BytesIO()
    torch.save({"generator": generator.state_dict(), "critic": critic.state_dict(), "g_opt": g_opt.state_dict(),
                "c_opt": c_opt.state_dict(), "rng": rng.get_state(), "step": step, "history": history,
                "elapsed": elapsed}, buffer)
    write_atomic(path, buffer.getvalue())
