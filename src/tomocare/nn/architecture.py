"""The U-Net's architecture as a validated value (no torch here: settings and model files use it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Upsample = Literal["nearest", "linear"]


class UNetConfig(BaseModel):
    """The architecture of a :class:`UNet`, validated; saved in ``model.json``. The bounds are the
    largest networks a model file may describe: beyond them it is damaged or hostile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ndim: Literal[2, 3] = 3
    depth: int = Field(2, ge=1, le=6)
    base_channels: int = Field(16, ge=1, le=256)
    residual: bool = False
    kernel_size: int = Field(3, ge=1, le=7)
    n_conv: int = Field(2, ge=1, le=4)
    upsample: Upsample = "nearest"
    # False: the same encoder and decoder without skip connections, the plain auto-encoder baseline;
    # model files written before the field existed are U-Nets (True)
    skips: bool = True
    in_channels: int = Field(1, ge=1, le=8)
    out_channels: int = Field(1, ge=1, le=8)

    @model_validator(mode="after")
    def _consistent(self) -> UNetConfig:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.residual and self.in_channels != self.out_channels:
            raise ValueError("a residual U-Net needs as many input as output channels")
        return self
