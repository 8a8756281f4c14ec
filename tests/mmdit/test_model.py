import pytest
import torch

from huabu.deployments.backends.mmdit.config import tiny_config
from huabu.deployments.backends.mmdit.layers import RotaryEmbedding, apply_rotary, joint_positions
from huabu.deployments.backends.mmdit.model import MMDiT, patchify, unpatchify


def test_patchify_round_trips() -> None:
    x = torch.randn(2, 3, 32, 48)
    tokens = patchify(x, 8)
    assert tokens.shape == (2, 24, 192)
    torch.testing.assert_close(unpatchify(tokens, 8, 3, 4, 6), x)


def test_fresh_model_predicts_zero_and_has_expected_shapes() -> None:
    cfg = tiny_config()
    model = MMDiT(cfg).eval()
    tokens = torch.randn(2, 16, cfg.patch_dim)
    text = torch.randn(2, 10, cfg.text_width)
    out = model(tokens, text, torch.ones(2, 10, dtype=torch.bool), torch.tensor([0.3, 0.9]), (4, 4))
    assert out.shape == (2, 16, cfg.patch_dim)
    assert out.abs().max() == 0  # adaLN-Zero and the zeroed final layer


def test_padded_text_tokens_do_not_influence_the_image() -> None:
    torch.manual_seed(0)
    cfg = tiny_config()
    model = MMDiT(cfg).eval()
    for p in model.parameters():  # leave the zero init so the output depends on everything
        torch.nn.init.normal_(p, std=0.05)
    tokens = torch.randn(1, 16, cfg.patch_dim)
    text = torch.randn(1, 10, cfg.text_width)
    mask = torch.tensor([[True] * 6 + [False] * 4])
    other = text.clone()
    other[:, 6:] = torch.randn(1, 4, cfg.text_width)
    t = torch.tensor([0.5])
    with torch.no_grad():
        a = model(tokens, text, mask, t, (4, 4))
        b = model(tokens, other, mask, t, (4, 4))
    torch.testing.assert_close(a, b)


def test_rotary_is_a_rotation_that_encodes_relative_position() -> None:
    rope = RotaryEmbedding((8, 12, 12), 10000.0)
    rotation = rope(joint_positions(3, 4, 4, torch.device("cpu")))
    assert rotation.shape == (19, 1, 16)
    q = torch.randn(1, 19, 2, 32)
    rotated = apply_rotary(q, rotation)
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm(dim=-1))
    # text tokens (axis 0) at positions 1..3; image token (0, 0) is rotated by nothing
    torch.testing.assert_close(rotated[:, 3], q[:, 3])


@pytest.mark.parametrize("batch", [1, 3])
def test_flops_count_is_positive_and_scales_with_batch(batch: int) -> None:
    model = MMDiT(tiny_config())
    assert model.flops_per_forward(batch, 16, 98) == batch * model.flops_per_forward(1, 16, 98)
