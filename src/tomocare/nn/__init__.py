"""Networks: the strictly local U-Net and its receptive field / halo arithmetic."""

from tomocare.nn.unet import UNet

__all__ = ["UNet"]
