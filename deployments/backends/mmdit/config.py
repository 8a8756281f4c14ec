"""Configuration of the MMDiT transformer, its text encoder and its image codec.

One frozen dataclass per concept, validated at construction so that a bad config fails with a
message that says what to change, not with a shape error deep inside ``forward``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from huabu.deployments.backends.contract import ModelLimits

Prediction = Literal["velocity", "sample"]
CodecKind = Literal["patch", "autoencoder", "external"]
# Where rotary positions come from. "text-axis": text tokens count 1..L on axis 0, image tokens sit
# at (0, row, column). "qwen": Qwen-Image's layout (image rows and columns centred on 0, text
# tokens on the diagonal after the largest image index, tables in float32 as it computes them).
RopeLayout = Literal["text-axis", "qwen"]
# How flow time becomes a sinusoid. "dit": sin-cos of (1000 t) in float32. "qwen": diffusers'
# Timesteps as Qwen-Image calls it: t and the frequencies first cast to the model dtype, then
# 1000 (t f) -- a different rounding, which matters for bit-level parity.
TimeEmbedding = Literal["dit", "qwen"]
GeluApproximate = Literal["none", "tanh"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class TextEncoderConfig:
    """Byte-level text encoder: UTF-8 bytes -> contextual embeddings (no vocabulary files)."""

    width: int = 128
    depth: int = 2
    num_heads: int = 4
    max_bytes: int = 96  # prompts are truncated to this many UTF-8 bytes (documented limit)

    def __post_init__(self) -> None:
        _require(self.width > 0 and self.depth > 0, "text encoder width and depth must be positive")
        _require(
            self.width % self.num_heads == 0,
            f"text encoder width {self.width} must be divisible by num_heads {self.num_heads}",
        )
        _require(self.max_bytes >= 8, f"max_bytes must be at least 8, got {self.max_bytes}")


@dataclass(frozen=True)
class CodecConfig:
    """Pixels <-> latents. ``patch`` is the identity (latents are pixels in [-1, 1])."""

    kind: CodecKind = "patch"
    latent_channels: int = 3
    downsample: int = 1  # pixels per latent cell along each axis
    hidden: int = 32  # autoencoder width; unused by the identity codec

    def __post_init__(self) -> None:
        _require(self.kind in ("patch", "autoencoder", "external"), f"unknown codec kind {self.kind!r}")
        if self.kind == "patch":
            _require(
                self.latent_channels == 3 and self.downsample == 1,
                "the identity 'patch' codec has latent_channels=3 and downsample=1",
            )
        _require(
            self.downsample >= 1 and self.downsample & (self.downsample - 1) == 0,
            f"codec downsample must be a power of two, got {self.downsample}",
        )


@dataclass(frozen=True)
class SamplingConfig:
    """How the model is meant to be sampled: what a request that does not say gets, and the most
    steps it accepts. A checkpoint states it in its config; a model that states nothing gets plain
    conditional sampling (guidance 1 needs no classifier-free training)."""

    steps: int = 20
    guidance: float = 1.0
    max_steps: int = 200

    def __post_init__(self) -> None:
        _require(1 <= self.steps <= self.max_steps, f"sampling steps must be in 1..{self.max_steps}, got {self.steps}")
        _require(self.guidance >= 0, f"sampling guidance must be >= 0, got {self.guidance}")


@dataclass(frozen=True)
class MMDiTConfig:
    """The dual-stream MMDiT (SD3 / Qwen-Image family)."""

    depth: int = 4
    width: int = 128
    num_heads: int = 4
    mlp_ratio: float = 4.0
    patch_size: int = 8
    text_width: int = 128  # width of the text encoder's output (Qwen-Image: 3584)
    rope_axes: tuple[int, int, int] = (8, 12, 12)  # (text index, row, column); sums to head dim
    rope_theta: float = 10000.0
    rope_layout: RopeLayout = "text-axis"
    time_embedding: TimeEmbedding = "dit"
    gelu_approximate: GeluApproximate = "none"  # Qwen-Image's feed-forward uses the tanh GELU
    pooled_text: bool = True  # add the mean text embedding to the timestep conditioning (SD3)
    # Fixed 2-D sin-cos position added to image tokens (DiT / SD3). Parameter-free; with rotary
    # positions alone a tiny model trained briefly on a CPU never learned where objects go.
    image_pos_embed: bool = False
    prediction: Prediction = "sample"
    # Resolution-dependent timestep shift (SD3 / Flux): mu interpolates between these
    # shifts as the image token count goes from base_tokens to max_tokens.
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_tokens: int = 16
    max_tokens: int = 256
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    default_size: tuple[int, int] = (32, 32)  # (height, width) in pixels
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    max_side_multiples: int = 64  # the largest side is this many pixel multiples

    def __post_init__(self) -> None:
        _require(self.depth > 0, f"depth must be positive, got {self.depth}")
        _require(
            self.width % self.num_heads == 0,
            f"width {self.width} must be divisible by num_heads {self.num_heads}; "
            f"try width={self.num_heads * max(1, round(self.width / self.num_heads))}",
        )
        head_dim = self.width // self.num_heads
        _require(head_dim % 2 == 0, f"head dim {head_dim} (width / num_heads) must be even")
        _require(
            sum(self.rope_axes) == head_dim,
            f"rope_axes {self.rope_axes} must sum to the head dim {head_dim} (width / num_heads)",
        )
        _require(all(a % 2 == 0 for a in self.rope_axes), f"each rope axis must be even: {self.rope_axes}")
        _require(self.rope_layout in ("text-axis", "qwen"), f"unknown rope_layout {self.rope_layout!r}")
        _require(self.time_embedding in ("dit", "qwen"), f"unknown time_embedding {self.time_embedding!r}")
        _require(
            self.gelu_approximate in ("none", "tanh"),
            f"gelu_approximate must be 'none' or 'tanh', got {self.gelu_approximate!r}",
        )
        _require(self.patch_size >= 1, f"patch_size must be positive, got {self.patch_size}")
        _require(self.mlp_ratio > 0, "mlp_ratio must be positive")
        _require(self.prediction in ("velocity", "sample"), "prediction must be 'velocity' or 'sample'")
        _require(self.max_tokens > self.base_tokens > 0, "need 0 < base_tokens < max_tokens")
        if self.codec.kind != "external":
            _require(
                self.text_width == self.text.width,
                f"text_width {self.text_width} must equal the text encoder width {self.text.width}",
            )
        _require(self.max_side_multiples >= 1, f"max_side_multiples must be positive, got {self.max_side_multiples}")
        h, w = self.default_size
        _require(max(h, w) <= self.max_side, f"default_size {self.default_size} exceeds max_side {self.max_side}")
        _require(
            h % self.pixel_multiple == 0 and w % self.pixel_multiple == 0,
            f"default_size {self.default_size} must be a multiple of {self.pixel_multiple}",
        )

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def latent_channels(self) -> int:
        return self.codec.latent_channels

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.latent_channels

    @property
    def pixel_multiple(self) -> int:
        """Image sides must be multiples of this many pixels (codec downsample x patch)."""
        return self.codec.downsample * self.patch_size

    @property
    def max_side(self) -> int:
        """The largest image side in pixels."""
        return self.max_side_multiples * self.pixel_multiple

    def limits(self) -> ModelLimits:
        """What the model accepts, as the gateway validates requests for it (backends/contract.py)."""
        return ModelLimits(
            default_size=self.default_size,
            pixel_multiple=self.pixel_multiple,
            max_side=self.max_side,
            steps=self.sampling.steps,
            guidance=self.sampling.guidance,
            max_steps=self.sampling.max_steps,
            max_prompt_bytes=self.text.max_bytes,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MMDiTConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        _require(not unknown, f"unknown MMDiT config keys: {unknown}")
        if "text" in data:
            data["text"] = TextEncoderConfig(**data["text"])
        if "codec" in data:
            data["codec"] = CodecConfig(**data["codec"])
        if "sampling" in data:
            data["sampling"] = SamplingConfig(**data["sampling"])
        for key in ("rope_axes", "default_size"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def tiny_config(**overrides: Any) -> MMDiTConfig:
    """The small CPU default: 32x32 pixels, identity codec, 8x8 patches -> 16 image tokens."""
    return dataclasses.replace(MMDiTConfig(image_pos_embed=True), **overrides)


def qwen_image_config() -> MMDiTConfig:
    """Qwen-Image's published transformer: 60 joint blocks, 24 heads x 128, text width 3584,
    16 latent channels (VAE downsample 8), patch 2, rotary axes (16, 56, 56) in its own layout,
    its timestep rounding and the tanh GELU: with weights converted by ``convert.py`` it computes
    what diffusers' ``QwenImageTransformer2DModel`` computes (tests/mmdit/test_qwen_parity.py)."""
    return MMDiTConfig(
        depth=60,
        width=24 * 128,
        num_heads=24,
        mlp_ratio=4.0,
        patch_size=2,
        text_width=3584,
        rope_axes=(16, 56, 56),
        rope_layout="qwen",
        time_embedding="qwen",
        gelu_approximate="tanh",
        pooled_text=False,
        prediction="velocity",
        base_shift=0.5,
        max_shift=0.9,
        base_tokens=256,
        max_tokens=8192,
        text=TextEncoderConfig(width=3584, depth=1, num_heads=28, max_bytes=1024),
        codec=CodecConfig(kind="external", latent_channels=16, downsample=8),
        default_size=(1024, 1024),
        # The Qwen-Image model card's recommendation (50 steps, true CFG 4.0).
        sampling=SamplingConfig(steps=50, guidance=4.0),
        max_side_multiples=128,  # 2048 pixels
    )


PRESETS = {"tiny": tiny_config, "qwen-image": qwen_image_config}


def preset(name: str) -> MMDiTConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
