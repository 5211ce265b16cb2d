"""2-D Noise2Noise (P2P): configuration, patches of single images, and a short training run."""

from __future__ import annotations

import json

import dask
import dask.array as da
import mrcfile
import numpy as np
import pytest
import torch
from helpers import write_test_mrc

from tomocare.cli import main
from tomocare.errors import TomocareError
from tomocare.evaluate.metrics import psnr
from tomocare.model import Model
from tomocare.simulate.tiltseries import poisson_noise, simulate_tilt_series
from tomocare.tilt.pairs import adjacent_tilt_pairs
from tomocare.tilt.split import frame_sums
from tomocare.train import TrainConfig, train
from tomocare.train.sampler import check_pairs, extract_batch, plan_patches


def test_2d_defaults_follow_the_paper_and_3d_is_unchanged():
    assert (TrainConfig(ndim=2).patch_size, TrainConfig(ndim=2).n_patches) == (128, 1000)
    assert TrainConfig(ndim=2, patch_size=64).patch_size == 64
    assert (TrainConfig().ndim, TrainConfig().patch_size, TrainConfig().n_patches) == (3, 64, 1200)


def test_2d_patches_are_single_images():
    stack = np.arange(3 * 64 * 48, dtype=np.float32).reshape(3, 64, 48)
    check_pairs([(stack, stack)], 16, ndim=2)
    plan = plan_patches([stack.shape], patch_size=16, n_train=50, n_val=5, val_fraction=0.2, seed=0, ndim=2)
    assert plan.train[:, 1].max() <= 2 and plan.train[:, 1].min() >= 0  # image index
    inp, tgt, _ = extract_batch({0: (stack, stack + 1)}, plan.train[:4], 16, 0.0, 1.0, None, 2)
    assert inp.shape == (4, 1, 16, 16)
    i, z, y, x = plan.train[0]
    assert np.array_equal(inp[0, 0], stack[z, y : y + 16, x : x + 16]) and np.array_equal(tgt[0, 0], inp[0, 0] + 1)
    with pytest.raises(TomocareError, match="larger than the images"):
        check_pairs([(stack, stack)], 80, ndim=2)
    with pytest.raises(TomocareError, match="stack of 2-D images"):
        check_pairs([(stack[0], stack[0])], 16, ndim=2)


@torch.inference_mode()
def denoise_image(net, info, image: np.ndarray) -> np.ndarray:
    """The 2-D network on a whole image: reflect-padded by the halo up to the pooling grid, cropped."""
    h, f = info.halo, info.factor
    pads = [(h, h + (-(n + 2 * h)) % f) for n in image.shape]
    x = torch.from_numpy(np.pad((image - info.mean) / info.std, pads, mode="reflect").astype(np.float32))
    y = net(x[None, None])[0, 0].numpy() * info.std + info.mean
    return y[h : h + image.shape[0], h : h + image.shape[1]]


def _images(seed: int = 0):
    """Three P2P pairings of one simulated specimen (two acquisitions, frame sums, adjacent tilts)."""
    ts = simulate_tilt_series((32, 128, 128), max_angle=6, step=3, dose=15.0, seed=seed, y_chunk=128)
    clean = ts.clean[:3]
    frames = da.concatenate([ts.clean[3:4] / np.float32(6)] * 6)
    with dask.config.set(scheduler="synchronous"):
        clean, a, b, even, odd, tilts = dask.compute(
            clean, poisson_noise(clean, seed, 21), poisson_noise(clean, seed, 22),
            *frame_sums(poisson_noise(frames, seed, 23)), ts.noisy)
    return clean, a, b, (even, odd), adjacent_tilt_pairs(tilts)


def test_short_2d_training_denoises(tmp_path, client):
    clean, a, b, frames_pair, tilt_pair = _images()
    config = TrainConfig(ndim=2, patch_size=32, n_patches=300, n_val_patches=32, batch_size=8, base_channels=8,
                         lr=2e-3, max_steps=120, steps_per_epoch=30, threads=1, progress=False)
    out = train([(a, b), frames_pair, tilt_pair], tmp_path / "m2d", config=config, client=client)
    meta = json.loads((out / "model.json").read_text())
    assert meta["architecture"]["ndim"] == 2 and meta["extra"]["config"]["ndim"] == 2
    history = json.loads((out / "history.json").read_text())
    val = [h["val_loss"] for h in (history if isinstance(history, list) else history["epochs"])]
    assert min(val[1:]) < val[0]

    info = Model.read(out)
    net = info.network()
    assert net.ndim == 2 and info.ndim == 2
    denoised = np.stack([
        (denoise_image(net, info, a[i]) + denoise_image(net, info, b[i])) / 2
        for i in range(len(a))
    ])
    before, after = psnr((a + b) / 2, clean), psnr(denoised, clean)
    print(f"P2P on simulated pairs: PSNR {before:.2f} dB (average of the pair) -> {after:.2f} dB")
    assert after > before + 1.0


def test_cli_2d_model_on_single_images_and_adjacent_tilts(tmp_path, client, capsys):
    """`train --ndim 2` on two single-image MRC files, `predict` back to a single image equal to
    whole-image inference; `train --tilt-series` (P2P-tap); a 3-D command given an image says
    which command takes it."""
    _, a, b, _, _ = _images()
    image = {name: write_test_mrc(tmp_path / f"{name}.mrc", data[0], voxel_size=(10.0, 10.0, 10.0))
             for name, data in (("a", a), ("b", b))}
    stack = write_test_mrc(tmp_path / "ts.mrc", a, voxel_size=(10.0, 10.0, 10.0))
    settings = tmp_path / "small.toml"
    settings.write_text("[train]\npatch_size = 32\nn_patches = 64\nn_val_patches = 8\nbatch_size = 4\n"
                        "base_channels = 8\nmax_steps = 4\nsteps_per_epoch = 2\nthreads = 1\n")
    common = ["--config", str(settings), "--scheduler", client.scheduler.address]
    pair = ["--even", str(image["a"]), "--odd", str(image["b"])]

    capsys.readouterr()
    assert main(["train", *pair, "-o", str(tmp_path / "m3"), *common]) == 2
    err = capsys.readouterr().err
    assert ("a.mrc: a single 2-D image" in err and "tomocare train --ndim 2" in err
            and len(err.strip().splitlines()) == 1)

    assert main(["train", "--ndim", "2", *pair, "-o", str(tmp_path / "m2"), *common]) == 0
    out = tmp_path / "den.zarr"
    assert main(["predict", "-m", str(tmp_path / "m2"), *pair, "-o", str(out), "--mrc", str(tmp_path / "den.mrc"),
                 "--scheduler", client.scheduler.address]) == 0
    with mrcfile.open(tmp_path / "den.mrc") as m:
        restored, voxel = m.data.copy(), float(m.voxel_size.x)
    assert restored.shape == a.shape[1:] and voxel == pytest.approx(10.0)
    expected = Model.read(tmp_path / "m2").predict_whole((a[:1], b[:1]), precision="auto")[0]
    assert np.abs(restored - expected).max() <= 1e-5 * float(np.abs(expected).max())

    assert main(["train", "--tilt-series", str(stack), "-o", str(tmp_path / "mt"), *common]) == 0
    meta = json.loads((tmp_path / "mt" / "model.json").read_text())
    assert meta["architecture"]["ndim"] == 2 and "ts" in json.dumps(meta["trained_on"])
    capsys.readouterr()
    assert main(["train", "--tilt-series", str(stack), "--ndim", "3", "-o", str(tmp_path / "mx"), *common]) == 2
    assert "--tilt-series trains a 2-D model" in capsys.readouterr().err
