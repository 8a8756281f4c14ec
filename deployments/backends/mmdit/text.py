"""Byte-level tokenizer and text encoder: UTF-8 bytes, so Chinese, English and mixed prompts
need no vocabulary files and no separate tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from huabu.deployments.backends.mmdit.config import TextEncoderConfig

PAD, BOS, EOS = 256, 257, 258
VOCAB_SIZE = 259


@dataclass(frozen=True)
class TokenizedPrompts:
    ids: Tensor  # (B, L) long, BOS bytes EOS PAD...
    mask: Tensor  # (B, L) bool, True for real tokens
    truncated: list[bool]  # per prompt: was it cut to the byte limit


def truncate_utf8(text: str, max_bytes: int) -> tuple[bytes, bool]:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return data, False
    return data[:max_bytes].decode("utf-8", errors="ignore").encode("utf-8"), True


class ByteTokenizer:
    """Prompts -> fixed-length byte ids. Every prompt is padded to the same length so that a
    request's tensors never depend on the other prompts in its batch."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.length = max_bytes + 2

    def __call__(self, prompts: list[str]) -> TokenizedPrompts:
        ids = torch.full((len(prompts), self.length), PAD, dtype=torch.long)
        truncated = []
        for row, prompt in enumerate(prompts):
            data, cut = truncate_utf8(prompt, self.max_bytes)
            truncated.append(cut)
            tokens = [BOS, *data, EOS]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return TokenizedPrompts(ids=ids, mask=ids != PAD, truncated=truncated)


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer with a key-padding mask."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        # x: (B, L, W); attn_mask: (B, 1, 1, L) bool
        b, length, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, L, Dh)
        x = x + self.out(attn.transpose(1, 2).reshape(b, length, w))
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = ByteTokenizer(config.max_bytes)
        self.embed = nn.Embedding(VOCAB_SIZE, config.width)
        self.position = nn.Parameter(torch.zeros(1, self.tokenizer.length, config.width))
        self.layers = nn.ModuleList(EncoderLayer(config.width, config.num_heads) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        # ids, mask: (B, L) -> (B, L, W); padded positions are zeroed
        x = self.embed(ids) + self.position[:, : ids.shape[1]]
        attn_mask = mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, attn_mask)
        return self.norm(x) * mask[..., None].to(x.dtype)

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor, list[bool]]:
        tokens = self.tokenizer(prompts)
        device = self.embed.weight.device
        ids, mask = tokens.ids.to(device), tokens.mask.to(device)
        return self(ids, mask), mask, tokens.truncated
