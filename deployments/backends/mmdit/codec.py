"""Image codecs between pixels in [-1, 1] and latents, behind one interface.

``PatchCodec`` is the identity (latents are pixels): it trains best on a CPU. ``ConvAutoencoder``
is a small learned codec. Real Qwen-Image weights bring their own VAE through the diffusers
backend, so the ``external`` kind has no module here.
"""

from __future__ import annotations

from torch import Tensor, nn

from huabu.deployments.backends.mmdit.config import CodecConfig, ConfigError


class ImageCodec(nn.Module):
    latent_channels: int
    downsample: int

    def encode(self, pixels: Tensor) -> Tensor:  # (B, 3, H, W) in [-1, 1] -> (B, C, H/f, W/f)
        raise NotImplementedError

    def decode(self, latents: Tensor) -> Tensor:  # (B, C, H/f, W/f) -> (B, 3, H, W) in [-1, 1]
        raise NotImplementedError


class PatchCodec(ImageCodec):
    latent_channels = 3
    downsample = 1

    def encode(self, pixels: Tensor) -> Tensor:
        return pixels

    def decode(self, latents: Tensor) -> Tensor:
        return latents.clamp(-1.0, 1.0)


class ConvAutoencoder(ImageCodec):
    """Strided convolutions down by ``downsample``, transposed convolutions back up."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.latent_channels = config.latent_channels
        self.downsample = config.downsample
        levels = config.downsample.bit_length() - 1
        down: list[nn.Module] = [nn.Conv2d(3, config.hidden, 3, padding=1), nn.SiLU()]
        up: list[nn.Module] = [nn.Conv2d(config.latent_channels, config.hidden, 3, padding=1), nn.SiLU()]
        for _ in range(levels):
            down += [nn.Conv2d(config.hidden, config.hidden, 4, stride=2, padding=1), nn.SiLU()]
            up += [nn.ConvTranspose2d(config.hidden, config.hidden, 4, stride=2, padding=1), nn.SiLU()]
        down.append(nn.Conv2d(config.hidden, config.latent_channels, 3, padding=1))
        up.append(nn.Conv2d(config.hidden, 3, 3, padding=1))
        self.encoder = nn.Sequential(*down)
        self.decoder = nn.Sequential(*up)

    def encode(self, pixels: Tensor) -> Tensor:
        return self.encoder(pixels)

    def decode(self, latents: Tensor) -> Tensor:
        return self.decoder(latents).clamp(-1.0, 1.0)


def build_codec(config: CodecConfig) -> ImageCodec:
    if config.kind == "patch":
        return PatchCodec()
    if config.kind == "autoencoder":
        return ConvAutoencoder(config)
    raise ConfigError("the 'external' codec (Qwen-Image's VAE) is loaded by the diffusers backend, not built here")
