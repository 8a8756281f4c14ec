"""The MMDiT transformer (SD3 / Qwen-Image family) in plain torch.

Image latents are patchified into tokens; text embeddings come from the text encoder. Both
streams pass through dual-stream ``JointBlock``s with adaLN-Zero timestep modulation, and the
final layer maps image tokens back to patches of the prediction (velocity or clean sample).
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
from torch import Tensor, nn

from huabu.deployments.backends.mmdit.config import MMDiTConfig
from huabu.deployments.backends.mmdit.layers import (
    FinalLayer,
    JointBlock,
    Linear,
    RotaryEmbedding,
    RowStableLinear,
    TimestepEmbedder,
    sincos_2d,
)


def patchify(latents: Tensor, patch: int) -> Tensor:
    # (B, C, H, W) -> (B, (H/p)(W/p), C p p)
    b, c, h, w = latents.shape
    x = latents.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(tokens: Tensor, patch: int, channels: int, grid_h: int, grid_w: int) -> Tensor:
    # (B, N, C p p) -> (B, C, H, W)
    b = tokens.shape[0]
    x = tokens.reshape(b, grid_h, grid_w, channels, patch, patch)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, channels, grid_h * patch, grid_w * patch)


class Embedded(NamedTuple):
    """The blocks' inputs: image and text streams (B, N, D) and (B, L, D), conditioning (B, D),
    rotations (S, 1, Dh/2) and the attention mask (B, 1, 1, S) or None."""

    img: Tensor
    txt: Tensor
    c: Tensor
    rope: Tensor
    attn_mask: Tensor | None


class MMDiT(nn.Module):
    def __init__(self, config: MMDiTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.width
        self.image_in = Linear(config.patch_dim, d)
        self.text_norm = nn.RMSNorm(config.text_width, eps=1e-6)
        self.text_in = Linear(config.text_width, d)
        self.time_embed = TimestepEmbedder(d, layout=config.time_embedding)
        self.pooled_embed = RowStableLinear(config.text_width, d) if config.pooled_text else None
        self.rope = RotaryEmbedding(config.rope_axes, config.rope_theta, config.rope_layout)
        self.blocks = nn.ModuleList(
            JointBlock(d, config.num_heads, config.mlp_ratio, config.gelu_approximate) for _ in range(config.depth)
        )
        self.final = FinalLayer(d, config.patch_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT initialisation: Xavier linears, zeroed adaLN modulation and output layer, so the
        network starts as an identity on each residual stream and predicts zero."""

        def xavier(module: nn.Module) -> None:
            if isinstance(module, nn.Linear) and module.weight.device.type != "meta":
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(xavier)
        if self.image_in.weight.device.type == "meta":
            return
        for linear in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(cast(nn.Linear, linear).weight, std=0.02)
        for block in self.blocks:
            for stream in (cast(JointBlock, block).image, cast(JointBlock, block).text):
                nn.init.zeros_(stream.modulation.linear.weight)
                nn.init.zeros_(stream.modulation.linear.bias)
        for layer in (self.final.modulation.linear, self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def condition(self, t: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        # t: (B,), text: (B, L, Dt), text_mask: (B, L) -> c: (B, D)
        c = self.time_embed(t)
        if self.pooled_embed is not None:
            weights = text_mask.to(text.dtype)[..., None]
            pooled = (text * weights).sum(1) / weights.sum(1).clamp_min(1.0)
            c = c + self.pooled_embed(pooled)
        return c

    def forward(
        self,
        image_tokens: Tensor,  # (B, N, P) patchified noisy latents
        text: Tensor,  # (B, L, Dt) text encoder output
        text_mask: Tensor,  # (B, L) bool, True for real tokens
        t: Tensor,  # (B,) flow time in [0, 1], 1 = pure noise
        grid: tuple[int, int],  # (H / p, W / p) latent patches per column and row
    ) -> Tensor:
        x = self.embed(image_tokens, text, text_mask, t, grid)
        img, txt = x.img, x.txt
        for block in self.blocks:
            img, txt = block(img, txt, x.c, x.rope, x.attn_mask)
        return self.final(img, x.c)  # (B, N, P)

    def embed(
        self, image_tokens: Tensor, text: Tensor, text_mask: Tensor, t: Tensor, grid: tuple[int, int]
    ) -> Embedded:
        """Everything before the first block (``forward``'s arguments); step caching
        (``mmdit/stepping.py``) runs the blocks itself."""
        b, n_txt = text.shape[:2]
        c = self.condition(t, text, text_mask)
        img = self.image_in(image_tokens)  # (B, N, D)
        if self.config.image_pos_embed:
            img = img + sincos_2d(grid[0], grid[1], img.shape[-1], img.device).to(img.dtype)
        txt = self.text_in(self.text_norm(text))  # (B, L, D)
        rope = self.rope(self.rope.positions(n_txt, grid[0], grid[1], img.device))  # (S, 1, Dh/2) complex
        attn_mask = None
        if not bool(text_mask.all()):
            image_mask = torch.ones(b, img.shape[1], dtype=torch.bool, device=img.device)
            attn_mask = torch.cat([text_mask, image_mask], dim=1)[:, None, None, :]  # (B, 1, 1, S)
        return Embedded(img, txt, c, rope, attn_mask)

    def flops_per_forward(self, batch: int, n_image: int, n_text: int) -> int:
        """Multiply-add FLOPs (2 per MAC) of the matmuls and attention in one forward."""
        d, cfg = self.config.width, self.config
        hidden = int(d * cfg.mlp_ratio)
        per_token = 2 * (3 * d * d + d * d + 2 * d * hidden)  # qkv, out, mlp
        s = n_image + n_text
        attention = 2 * 2 * s * s * d  # q k^T and attn v
        block = batch * ((n_image + n_text) * per_token + attention + 2 * 2 * 6 * d * d)
        io = batch * 2 * (n_image * (cfg.patch_dim * d * 2) + n_text * cfg.text_width * d)
        return cfg.depth * block + io
