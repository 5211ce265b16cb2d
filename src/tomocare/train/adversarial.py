"""Adversarial training of the generator (the U-Net) against a conditional PatchGAN critic.

Two objectives, each as small pure functions of the critic's scores: a conditional GAN
(pix2pix: binary cross-entropy on logits, the non-saturating generator loss) and WGAN-GP
(Gulrajani et al. 2017: Wasserstein critic loss plus a gradient penalty on random interpolates
of real and generated outputs, generator loss −E[D]). :class:`Adversary` holds the critic, its
optimiser and its random draws, and is saved in and restored from the training checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from tomocare.nn.critic import PatchCritic, critic_depth
from tomocare.nn.device import autocast

Critic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Adam of the critic as in the papers: pix2pix 2e-4, beta1 0.5; WGAN-GP 1e-4, betas (0, 0.9)
CRITIC_ADAM = {"gan": {"lr": 2e-4, "betas": (0.5, 0.999)}, "wgan-gp": {"lr": 1e-4, "betas": (0.0, 0.9)}}


def gan_critic_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """cGAN critic: cross-entropy of real patches as 1 and generated ones as 0, halved (pix2pix)."""
    real, fake = real.float(), fake.float()
    return 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                  + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def gan_generator_loss(fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: −log D(G(x)), as cross-entropy of generated patches as 1."""
    fake = fake.float()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def wgan_critic_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Wasserstein critic loss E[D(fake)] − E[D(real)] (the penalty is added separately)."""
    return fake.float().mean() - real.float().mean()


def wgan_generator_loss(fake: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss −E[D(G(x))]."""
    return -fake.float().mean()


def gradient_penalty(critic: Critic, condition: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """E[(‖∇ D(x, x̂)‖ − 1)²] over x̂ = ε real + (1 − ε) fake, ε ~ U(0, 1) per sample (drawn with
    ``generator``, on the CPU, so that a seed fixes it on any device). D of a sample is the mean of
    its score map; the gradient is with respect to the candidate only (the condition is given). fp32."""
    eps = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), generator=generator).to(real.device)
    mixed = (eps * real.float() + (1 - eps) * fake.float()).requires_grad_(True)
    with torch.autocast(real.device.type, enabled=False):
        scores = critic(condition.float(), mixed).flatten(1).mean(1)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


@dataclass
class Adversary:
    """The critic of an adversarial run, its Adam optimiser and the generator of its random draws."""

    kind: str  # "gan" or "wgan-gp"
    critic: PatchCritic
    optimizer: torch.optim.Optimizer
    rng: torch.Generator
    gp_weight: float = 10.0
    precision: str = "fp32"

    @classmethod
    def build(cls, kind: str, *, ndim: int, channels: int, patch_size: int, seed: int, device: torch.device,
              gp_weight: float = 10.0, precision: str = "fp32") -> Adversary:
        """A new critic for patches of ``patch_size``, initialised from ``seed`` (not the global RNG)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            critic = PatchCritic(ndim, channels, critic_depth(patch_size)).to(device)
        optimizer = torch.optim.Adam(critic.parameters(), **CRITIC_ADAM[kind])  # type: ignore[arg-type]
        rng = torch.Generator().manual_seed(seed)
        return cls(kind, critic, optimizer, rng, gp_weight, precision)

    def _scores(self, condition: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        with autocast(condition.device, self.precision):
            return self.critic(condition, candidate).float()

    def critic_step(self, condition: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> float:
        """One update of the critic on a batch (``fake`` detached from the generator); its loss."""
        self.critic.train()
        self.critic.requires_grad_(True)
        real_scores, fake_scores = self._scores(condition, real), self._scores(condition, fake)
        if self.kind == "gan":
            loss = gan_critic_loss(real_scores, fake_scores)
        else:
            loss = wgan_critic_loss(real_scores, fake_scores) + self.gp_weight * gradient_penalty(
                self.critic, condition, real, fake, self.rng)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def generator_loss(self, condition: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss for ``fake`` (gradients reach the generator, not the critic)."""
        self.critic.requires_grad_(False)
        scores = self._scores(condition, fake)
        return gan_generator_loss(scores) if self.kind == "gan" else wgan_generator_loss(scores)

    def state_dict(self) -> dict:
        return {"critic": self.critic.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])
