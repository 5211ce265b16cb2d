"""Noise-model transfer (NT2C, Li et al., Bioinformatics 2022): denoise data that has no even/odd halves.

A coarse denoiser (the shipped general model, or any model) enhances the data; where the enhanced
data is flat (:mod:`.background`) the raw voxels are taken as pure noise; a WGAN-GP learns to make
more of it (:mod:`.synthesiser`); clean signal (the coarse-denoised data, or simulated tomograms as
in the paper) and synthesised noise are mixed in the proportions of the real data's spectrum
(:mod:`.reweight`) into training pairs for a fine denoiser, started from the coarse one;
:mod:`.chain` runs it all over a dataset, resumably; :mod:`.diagnostics` compares made and real noise.
"""
