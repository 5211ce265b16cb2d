"""Synthetic cryo-ET tomograms with ground truth, generated lazily (dask) and out-of-core.

:func:`simulate_tomogram` returns lazy float32 ``clean``/``even``/``odd`` arrays (z, y, x) and
the particle table; :func:`simulate_dataset` writes a few tomograms as MRC files plus CSVs.

The model, in brief (details in the modules):

- Phantom (:mod:`.objects`, :mod:`.render`): an ice slab normal to z with a faint
  low-frequency background; vesicles (membrane shells, radius 150-600 Å), actin-like filaments
  and a few hollow microtubule-like tubes (gently curved polylines), and particles of four
  kinds (unions of gaussian lobes, radius 30-80 Å, random orientations). Sizes are in Å and
  counts are densities per µm³ of ice, drawn once from the seed as small tables.
- Missing wedge (:mod:`.fourier`): tilt axis y, beam z; frequencies whose (kx, kz) direction
  is more than ``tilt_range`` from the kx axis are missing. ``clean`` is the phantom after it:
  what a perfect Noise2Noise denoiser could reach.
- Noise (:mod:`.noise`): per half, independent white noise coloured like a weighted
  back-projection (power ∝ |k| in the measured region, none in the wedge, rolled off at
  Nyquist). ``even = clean + noise_std * n_even`` and likewise ``odd``.
- SNR = var(clean) / var(noise of one half), over the volume; ``noise_std`` follows from
  the signal variance measured on up to 32 windows (exact for small volumes, estimated for
  large ones: see :func:`.tomogram.estimate_signal_variance`).
- Tilt series, movie frames and 2-D pairs (:mod:`.tiltseries`): projections of the phantom
  with dose-dependent Poisson noise, for reconstruction and 2-D (P2P) denoising.
- Supervised pairs (:mod:`.degrade`, :mod:`.pairs`): the clean volume degraded by gaussian,
  WBP-coloured, salt-and-pepper or (whole-volume) tilt-series Poisson noise, against the clean
  volume or the phantom; parameters drawn per pair from ranges (:class:`PairSpec`), written by
  :func:`simulate_pairs` or rendered on the fly by :func:`simulated_pairs`.
- Out-of-core: one independent task per block; filters are compact kernels, so blocks are
  exact (no seams) and, up to float rounding, results do not depend on the chunking; same seed
  and chunks, same bytes.
"""

from tomocare.simulate.dataset import simulate_dataset
from tomocare.simulate.pairs import PairSpec, SimulatedVolume, simulate_pairs, simulated_pairs
from tomocare.simulate.tiltseries import (
    SimulatedImages,
    SimulatedTiltSeries,
    simulate_image_pairs,
    simulate_movie,
    simulate_tilt_series,
    write_tilt_series,
)
from tomocare.simulate.tomogram import SimulatedTomogram, simulate_tomogram

__all__ = [
    "PairSpec", "SimulatedImages", "SimulatedVolume", "simulate_pairs", "simulated_pairs",
    "SimulatedTiltSeries", "SimulatedTomogram", "simulate_dataset", "simulate_image_pairs",
    "simulate_movie", "simulate_tilt_series", "simulate_tomogram", "write_tilt_series",
]
