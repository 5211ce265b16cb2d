"""Adversarial training (the U-Net as the generator of a cGAN or a WGAN-GP), the SSIM loss and the auto-encoder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tomocare.evaluate.metrics import psnr
from tomocare.evaluate.ssim import ssim
from tomocare.io.mrc import open_mrc
from tomocare.model import Model
from tomocare.nn.critic import PatchCritic
from tomocare.simulate import simulate_dataset
from tomocare.train import TrainConfig, train
from tomocare.train.adversarial import (
    Adversary,
    gan_critic_loss,
    gan_generator_loss,
    gradient_penalty,
    wgan_critic_loss,
    wgan_generator_loss,
)
from tomocare.train.losses import ssim_loss

# ---------------------------------------------------------------- pure functions


def test_ssim_loss_is_zero_for_identical_and_agrees_with_the_numpy_ssim():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 1, 14, 16, 18, generator=g)
    noisy = target + 0.5 * torch.randn(target.shape, generator=g)
    assert ssim_loss(target, target).item() == pytest.approx(0, abs=1e-6)
    for nd in (3, 2):
        t, x = (target, noisy) if nd == 3 else (target[:, :, 0], noisy[:, :, 0])
        expected = np.mean([ssim(a[0].numpy(), b[0].numpy()) for a, b in zip(x, t)])  # each patch its own range
        assert 1 - ssim_loss(x, t).item() == pytest.approx(expected, rel=1e-5)
    assert ssim_loss(noisy.bfloat16(), target).dtype == torch.float32
    with pytest.raises(ValueError, match="longer than 10"):
        ssim_loss(target[..., :10], target[..., :10])


def test_gradient_penalty_of_a_linear_critic_is_known_in_closed_form():
    """D(c, x) = <w, x> + <v, c>: the gradient with respect to x is w everywhere, so the penalty is (|w| - 1)^2."""
    shape = (3, 1, 4, 4, 4)
    w = torch.randn(shape[1:], generator=torch.Generator().manual_seed(1))

    def critic(condition, candidate):
        return (candidate * w).flatten(1).sum(1)[:, None] + 7 * condition.flatten(1).sum(1)[:, None]

    real, fake, cond = torch.randn(shape), torch.randn(shape), torch.randn(shape)
    gp = gradient_penalty(critic, cond, real, fake, torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
    gp = gradient_penalty(lambda c, x: (x / 64).flatten(1).sum(1)[:, None], cond, real, fake)
    assert gp.item() == pytest.approx((math.sqrt(64) / 64 - 1) ** 2, rel=1e-5)  # gradient 1/64 per voxel, norm 1/8
    # the penalty trains: its gradient reaches the critic's parameters
    net = PatchCritic(ndim=3, channels=4, n_down=1)
    gradient_penalty(net, cond, real, fake).backward()
    first = net.net[0].weight.grad  # (the last bias shifts D, not its gradient: it gets none)
    assert first is not None and torch.isfinite(first).all() and first.abs().sum() > 0


def test_adversarial_losses():
    big = torch.full((2, 1, 3, 3), 20.0)
    assert gan_critic_loss(big, -big).item() == pytest.approx(0, abs=1e-6)  # sure and right
    assert gan_generator_loss(big).item() == pytest.approx(0, abs=1e-6)
    assert gan_generator_loss(-big).item() == pytest.approx(20, rel=1e-3)  # non-saturating: large when fooled not
    assert wgan_critic_loss(big, -big).item() == -40 and wgan_generator_loss(big).item() == -20


@pytest.mark.parametrize("ndim", [2, 3])
def test_critic_scores_patches(ndim):
    critic = PatchCritic(ndim=ndim, channels=4, n_down=2)
    x = torch.randn(2, 1, *(16,) * ndim)
    assert critic(x, x).shape == (2, 1, *(4,) * ndim)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in critic.modules())


def test_settings():
    assert TrainConfig().adversarial == "none" and TrainConfig().architecture == "unet"
    cfg = TrainConfig(mode="supervised", adversarial="wgan-gp", loss="ssim", architecture="autoencoder")
    assert cfg.network().skips is False and TrainConfig().network().skips is True
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg
    with pytest.raises(ValidationError, match="needs supervised training"):
        TrainConfig(adversarial="gan")  # noise2noise
    with pytest.raises(ValidationError, match="11-voxel window"):
        TrainConfig(loss="ssim", patch_size=8, depth=2)
    for bad in ({"adversarial": "lsgan"}, {"architecture": "resnet"}, {"critic_steps": 0}):
        with pytest.raises(ValidationError):
            TrainConfig(mode="supervised", **bad)


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, client):
    d = tmp_path_factory.mktemp("sim")
    (row,) = simulate_dataset(d, n_tomograms=1, shape=(32, 96, 96), snr=0.3, seed=5, chunks=32)
    return Path(row["even"]), Path(row["clean"])


def _train(simulated, client, out: Path, resume: bool = False, **settings) -> Path:
    noisy, clean = simulated
    config = TrainConfig(**{
        "mode": "supervised", "depth": 2, "base_channels": 8, "patch_size": 16, "batch_size": 8, "n_patches": 300,
        "n_val_patches": 16, "lr": 3e-3, "max_steps": 30, "steps_per_epoch": 15, "schedule": "plateau",
        "precision": "fp32", "threads": 2, "progress": False, "critic_channels": 8, "seed": 3, **settings})
    pairs = [(open_mrc(noisy)[:], open_mrc(clean)[:])]
    return train(pairs, out, config=config, client=client, mean=0.0, std=1.0, resume=resume)


def _weights(out: Path) -> dict:
    return Model.read(out).network().state_dict()


def _psnr_gain(out: Path, simulated) -> float:
    noisy, clean = (np.asarray(open_mrc(p)[:], dtype=np.float32) for p in simulated)
    model = Model.read(out)
    net = model.network().eval()
    with torch.no_grad():
        pred = net(torch.from_numpy((noisy - model.mean) / model.std)[None, None])[0, 0].numpy()
    return psnr(pred, clean) - psnr(noisy, clean)


@pytest.fixture(scope="module")
def runs(simulated, client, tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return {kind: _train(simulated, client, d / kind, adversarial=kind) for kind in ("gan", "wgan-gp")}


@pytest.mark.parametrize("kind", ["gan", "wgan-gp"])
def test_adversarial_training_records_finite_losses_and_beats_the_input(kind, runs, simulated):
    out = runs[kind]
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [15, 30]
    for h in history:
        for key in ("train_loss", "val_loss", "adversarial_loss", "critic_loss"):
            assert math.isfinite(h[key]), (key, h)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(checkpoint["adversary"]) == {"critic", "optimizer", "rng"}
    assert not any(k.startswith("net.") for k in _weights(out))  # model files hold the generator only
    meta = json.loads((out / "model.json").read_text())
    assert meta["extra"]["objective"]["adversarial"].startswith(kind)
    gain = _psnr_gain(out, simulated)
    print(f"{kind}: PSNR gain {gain:.2f} dB")
    assert gain > 1


TINY = {"adversarial": "wgan-gp", "batch_size": 4, "steps_per_epoch": 4, "n_patches": 40}


@pytest.fixture(scope="module")
def tiny(simulated, client, tmp_path_factory):
    """Two short WGAN-GP runs of the same settings and seed (the critic's init and interpolation draws seeded)."""
    d = tmp_path_factory.mktemp("tiny")
    return [_train(simulated, client, d / str(i), max_steps=8, **TINY) for i in range(2)]


def _history(out: Path) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in json.loads((out / "history.json").read_text())]


def test_the_same_seed_gives_the_same_run(tiny):
    first, again = tiny
    assert _history(first) == _history(again) and len(_history(first)) == 2
    for (name, a), b in zip(_weights(again).items(), _weights(first).values()):
        assert torch.equal(a, b), name
    critics = [torch.load(out / "checkpoint.pt", weights_only=True)["adversary"]["critic"] for out in tiny]
    assert all(torch.equal(a, b) for a, b in zip(critics[0].values(), critics[1].values()))


def test_resume_restores_the_critic(tiny, simulated, client, tmp_path):
    """4 steps, then resumed to 8: the run without the interruption (critic, its Adam and draws restored)."""
    part = _train(simulated, client, tmp_path / "part", max_steps=4, **TINY)
    _train(simulated, client, part, resume=True, max_steps=8, **TINY)
    resumed, whole = _history(part), _history(tiny[0])
    assert [h["step"] for h in resumed] == [4, 8]
    for got, want in zip(resumed, whole):
        for key in ("train_loss", "val_loss", "adversarial_loss", "critic_loss"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key


def test_autoencoder_and_ssim_train(simulated, client, tmp_path):
    out = _train(simulated, client, tmp_path / "ae", architecture="autoencoder", loss="ssim", max_steps=8,
                 steps_per_epoch=4)
    assert Model.read(out).architecture.skips is False
    history = json.loads((out / "history.json").read_text())
    assert 0 < history[-1]["val_loss"] < 1 and "critic_loss" not in history[-1]


def test_adversary_state_round_trip():
    a = Adversary.build("wgan-gp", ndim=2, channels=4, patch_size=16, seed=0, device=torch.device("cpu"))
    b = Adversary.build("wgan-gp", ndim=2, channels=4, patch_size=16, seed=1, device=torch.device("cpu"))
    x = torch.randn(2, 1, 16, 16)
    a.critic_step(x, x, x + 1)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(a.critic.state_dict().values(), b.critic.state_dict().values()))
    assert torch.equal(torch.rand(3, generator=a.rng), torch.rand(3, generator=b.rng))


# ---------------------------------------------------------------- command line


@pytest.mark.parametrize(("argv", "message"), [
    (["--adversarial", "lsgan"], "--adversarial"),
    (["--architecture", "resnet"], "--architecture"),
    (["--loss", "huber"], "--loss"),
])
def test_cli_refuses_bad_values_in_one_line(argv, message, tmp_path, capsys):
    from tomocare.cli import main

    assert main(["train", "--input", "a.mrc", "--target", "b.mrc", *argv, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_cli_refuses_adversarial_noise2noise_in_one_line(tmp_path, capsys):
    from tomocare.cli import main

    assert main(["train", "--even", "a.mrc", "--odd", "b.mrc", "--adversarial", "gan", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs supervised training" in err and len(err.strip().splitlines()) == 1, err


def test_cli_options_reach_the_settings(simulated, client, tmp_path, monkeypatch):
    import tomocare.train.loop as loop
    from tomocare.cli import main

    seen = {}
    monkeypatch.setattr(loop, "train", lambda pairs, out, *, config, **kw: seen.update(config=config))
    noisy, clean = simulated
    assert main(["train", "--input", str(noisy), "--target", str(clean), "--adversarial", "wgan-gp",
                 "--architecture", "autoencoder", "--loss", "ssim", "--out", str(tmp_path / "m"),
                 "--scheduler", client.scheduler.address]) == 0
    cfg = seen["config"]
    assert (cfg.adversarial, cfg.architecture, cfg.loss, cfg.network().skips) == ("wgan-gp", "autoencoder", "ssim",
                                                                                  False)
