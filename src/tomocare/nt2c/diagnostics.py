"""Diagnostics of synthesised noise: how close is it to the real background noise it imitates?

Each takes two stacks of patches of one shape, ``real`` (background patches of the data) and
``synth`` (from :meth:`Synthesiser.sample`), square (n, d, d) or cubic (n, d, d, d):

- :func:`spectrum_match`: the ratio of the radially averaged power spectra, synth / real, per
  frequency shell (:func:`~tomocare.nt2c.reweight.radial_power`), and its largest deviation from
  1 over the band that matters: the shells from 1 (shell 0 is the mean, removed) to Nyquist where
  the real noise has at least ``min_power`` of its peak power. Second-order statistics: the noise's
  colour, which the re-weighting (:mod:`tomocare.nt2c.reweight`) relies on.
- :func:`critic_auc`: a classifier two-sample test. A fresh :class:`NoiseCritic` is trained to tell
  real from synthesised patches on half of each stack and scored on the other half: the ROC AUC
  (Mann-Whitney, by ranks) is 0.5 when the two cannot be told apart and near 1 (or 0) when they
  can. It sees every statistic a small convolutional network can, not only the spectrum.
- :func:`histogram_distance`: the total variation distance between the value histograms (0 for
  equal, 1 for disjoint): first-order statistics, the noise's amplitude distribution.

:func:`noise_figure` draws a few patches of each, their spectra and histograms;
:func:`background_figure` draws where the background patches were found on a slice of the data.
Figures are drawn on a standalone matplotlib ``Figure`` (no pyplot state, no display) and
written in one step.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tomocare.errors import TomocareError
from tomocare.io.atomic import write_atomic
from tomocare.nt2c.reweight import radial_power
from tomocare.nt2c.synthesiser import NoiseCritic


def _stacks(real: np.ndarray, synth: np.ndarray, least: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Both stacks as float arrays, checked: (n, d, d) or (n, d, d, d), one patch shape, ``least`` patches."""
    real, synth = np.asarray(real), np.asarray(synth)
    for name, stack in (("real", real), ("synthesised", synth)):
        if stack.ndim not in (3, 4) or len(set(stack.shape[1:])) != 1:
            raise TomocareError(f"{name} noise patches of shape {stack.shape}: give a stack of square (n, d, d) "
                                "or cubic (n, d, d, d) patches")
        if len(stack) < least:
            raise TomocareError(f"{len(stack)} {name} noise patch(es): at least {least} are needed")
    if real.shape[1:] != synth.shape[1:]:
        raise TomocareError(f"real noise patches of shape {real.shape[1:]} and synthesised ones of shape "
                            f"{synth.shape[1:]}: give patches of one shape")
    return real, synth


def spectrum_match(real: np.ndarray, synth: np.ndarray, *, min_power: float = 0.01) -> dict:
    """Radial power spectra of both stacks compared shell by shell (shell k = k/d cycles per voxel).

    Returns ``shells`` (0 .. d/2), ``ratio`` (synth / real power per shell; None at shell 0 and
    wherever the real power is 0), ``band`` ([first, last] shell in 1 .. d/2 whose real power is at least
    ``min_power`` × its peak over those shells), ``max_deviation`` (largest |ratio - 1| over the
    shells of the band that clear that floor) and ``max_deviation_above_1`` (the same over those
    shells from 2 on, None if there are none: shell 1 holds few Fourier components and is the
    noisiest estimate)."""
    if not 0 < min_power <= 1:
        raise TomocareError(f"min_power {min_power}: give a fraction of the peak power in (0, 1]")
    real, synth = _stacks(real, synth)
    p_real, p_synth = radial_power(real), radial_power(synth)
    shells = np.arange(len(p_real))
    ratio = np.divide(p_synth, p_real, out=np.full_like(p_real, np.nan), where=p_real > 0)
    ratio[0] = np.nan  # the mean, removed: what power is left there is rounding
    peak = p_real[1:].max()
    if not (np.isfinite(peak) and peak > 0):
        raise TomocareError("the real noise patches have no power at any non-zero frequency (constant patches?)")
    inside = (shells >= 1) & (p_real >= min_power * peak)
    deviation = np.abs(ratio - 1)
    above = inside & (shells >= 2)
    return {
        "shells": shells.tolist(),
        "ratio": [None if np.isnan(r) else float(r) for r in ratio],
        "band": [int(shells[inside][0]), int(shells[inside][-1])],
        "max_deviation": float(deviation[inside].max()),
        "max_deviation_above_1": float(deviation[above].max()) if above.any() else None,
    }


def _auc(negative: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC = P(positive score > negative score) + P(tie) / 2, by the Mann-Whitney U of average ranks."""
    scores = np.concatenate([negative, positive])
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based, ties share their average rank
    n_pos, n_neg = len(positive), len(negative)
    u = ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def critic_auc(real: np.ndarray, synth: np.ndarray, *, seed: int = 0, steps: int = 200, channels: int = 8) -> dict:
    """Classifier two-sample test: train a fresh :class:`NoiseCritic` (``channels`` wide) to tell synth (1) from
    real (0) on a random half of each stack, then score the other halves.

    Patches are standardised by the real training half's mean and standard deviation; training is
    BCE with logits, Adam 1e-3, batches of 16 (8 of each), ``steps`` steps, on the CPU, seeded by
    ``seed`` without touching the global random state. Returns ``auc`` (ROC AUC on the test halves:
    0.5 = indistinguishable, 1 or 0 = told apart), ``accuracy`` (test accuracy at logit 0, over
    both test halves), ``train`` and ``test`` ([real, synth] counts), ``steps`` and ``loss`` (the
    mean training loss of the last 20 steps)."""
    real, synth = _stacks(real, synth, least=2)
    rng = np.random.default_rng(seed)
    real, synth = real[rng.permutation(len(real))], synth[rng.permutation(len(synth))]
    (real_train, real_test), (synth_train, synth_test) = (np.array_split(real, 2), np.array_split(synth, 2))
    mean, std = float(real_train.mean()), float(real_train.std())
    if not (np.isfinite(std) and std > 0):
        raise TomocareError("the real noise patches are constant or not finite")

    def tensor(stack: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((stack - mean) / std).astype(np.float32)).unsqueeze(1)

    x_real, x_synth = tensor(real_train), tensor(synth_train)
    half = 8
    labels = torch.cat([torch.zeros(half), torch.ones(half)])
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = NoiseCritic(real.ndim - 1, channels)
        optimiser = torch.optim.Adam(critic.parameters(), lr=1e-3)
        draw = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            batch = torch.cat([x_real[torch.randint(len(x_real), (half,), generator=draw)],
                               x_synth[torch.randint(len(x_synth), (half,), generator=draw)]])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(critic(batch), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        critic.eval()
        with torch.no_grad():
            s_real, s_synth = (np.concatenate([critic(tensor(chunk)).numpy() for chunk in
                                               np.array_split(stack, max(1, len(stack) // 64))])
                               for stack in (real_test, synth_test))
    correct = (s_real <= 0).sum() + (s_synth > 0).sum()
    return {
        "auc": _auc(s_real, s_synth),
        "accuracy": float(correct / (len(s_real) + len(s_synth))),
        "train": [len(real_train), len(synth_train)],
        "test": [len(real_test), len(synth_test)],
        "steps": steps,
        "loss": float(np.mean(losses[-20:])) if losses else None,
    }


def _edges(real: np.ndarray, synth: np.ndarray, bins: int) -> np.ndarray:
    """``bins`` + 1 common bin edges over the pooled values' 0.5 - 99.5 percentile range."""
    low, high = np.percentile(np.concatenate([real.ravel(), synth.ravel()]), [0.5, 99.5])
    if not high > low:
        low, high = low - 0.5, low + 0.5
    return np.linspace(low, high, bins + 1)


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fractions of ``values`` per bin, values beyond the edges counted in the end bins (the fractions sum to 1)."""
    counts, _ = np.histogram(np.clip(values.ravel(), edges[0], edges[-1]), edges)
    return counts / max(counts.sum(), 1)


def histogram_distance(real: np.ndarray, synth: np.ndarray, bins: int = 64) -> float:
    """Total variation distance (½ Σ |p - q|: 0 equal, 1 disjoint) between the value histograms of both stacks,
    on ``bins`` common bins over the pooled 0.5 - 99.5 percentile range (values beyond it in the end bins).
    Finite samples give a small positive distance even for one distribution."""
    real, synth = np.asarray(real, np.float64), np.asarray(synth, np.float64)
    if real.size == 0 or synth.size == 0:
        raise TomocareError("no noise values to compare")
    edges = _edges(real, synth, bins)
    return float(0.5 * np.abs(_histogram(real, edges) - _histogram(synth, edges)).sum())


def _montage(patches: np.ndarray, count: int = 3) -> np.ndarray:
    """The central slices (along the first axis, for cubic patches) of the first ``count`` patches side by
    side, one NaN column between them."""
    d = patches.shape[-1]
    slices = [p[d // 2] if p.ndim == 3 else p for p in patches[:count]]
    out = np.full((d, len(slices) * (d + 1) - 1), np.nan)
    for i, s in enumerate(slices):
        out[:, i * (d + 1) : i * (d + 1) + d] = s
    return out


def _save(fig: Figure, path: str | os.PathLike, dpi: int = 90) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    write_atomic(path, buffer.getvalue())
    return Path(path)


def noise_figure(real: np.ndarray, synth: np.ndarray, path: str | os.PathLike, title: str) -> Path:
    """A PNG: central slices of 3 real and 3 synthesised patches (top; one grey scale), both radially averaged
    power spectra (log scale) and both value histograms (bottom)."""
    real, synth = _stacks(real, synth)
    real, synth = np.asarray(real, np.float64), np.asarray(synth, np.float64)
    fig = Figure(figsize=(10, 7))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.3])
    low, high = np.percentile(np.concatenate([real[:3].ravel(), synth[:3].ravel()]), [1, 99])
    for col, (name, stack) in enumerate((("real", real), ("synthesised", synth))):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(_montage(stack), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(f"{name}: central slices" if stack.ndim == 4 else name, fontsize=10)
        ax.set_axis_off()
    d = real.shape[-1]
    match = spectrum_match(real, synth)
    ax = fig.add_subplot(grid[1, 0])
    for name, stack in (("real", real), ("synthesised", synth)):
        ax.semilogy(np.arange(1, d // 2 + 1) / d, radial_power(stack)[1:], marker=".", label=name)
    ax.set_xlabel("spatial frequency (cycles per voxel)")
    ax.set_ylabel("radially averaged power")
    ax.set_title(f"power spectra (max |ratio - 1| {match['max_deviation']:.2f}, shells {match['band'][0]}-"
                 f"{match['band'][1]})", fontsize=10)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(grid[1, 1])
    edges = _edges(real, synth, 64)
    for name, stack in (("real", real), ("synthesised", synth)):
        ax.stairs(_histogram(stack, edges), edges, label=name)
    ax.set_xlabel("value (end bins hold the tails)")
    ax.set_ylabel("fraction of values")
    ax.set_title(f"value histograms (total variation {histogram_distance(real, synth):.3f})", fontsize=10)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def background_figure(image_slice: np.ndarray, corners: np.ndarray, patch: int, path: str | os.PathLike,
                      title: str) -> Path:
    """A PNG of a 2-D ``image_slice`` with a ``patch`` × ``patch`` outline at each of the ``corners`` ((y, x)
    of the first voxel, in the slice's pixels) and the number of patches in the title."""
    image = np.asarray(image_slice, np.float64)
    if image.ndim != 2:
        raise TomocareError(f"a slice of shape {image.shape}: give a 2-D image")
    corners = np.asarray(corners, np.int64).reshape(-1, 2)
    height, width = image.shape
    scale = 8 / max(height, width)
    fig = Figure(figsize=(max(width * scale, 3), max(height * scale, 3) + 0.6))
    ax = fig.add_subplot()
    low, high = np.percentile(image, [1, 99]) if image.size else (0, 1)
    ax.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    boxes = [Rectangle((x - 0.5, y - 0.5), patch, patch) for y, x in corners]
    ax.add_collection(PatchCollection(boxes, facecolor="none", edgecolor="tab:orange", linewidth=0.8))
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_title(f"{title}: {len(corners)} background patch{'' if len(corners) == 1 else 'es'}", fontsize=10)
    ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)
