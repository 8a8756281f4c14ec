"""The qwen-image preset is Qwen-Image's transformer: same parameter count as diffusers'."""

import torch

from huabu.deployments.backends.mmdit.config import qwen_image_config
from huabu.deployments.backends.mmdit.model import MMDiT


def test_qwen_image_preset_matches_diffusers_parameter_count() -> None:
    from diffusers import QwenImageTransformer2DModel

    with torch.device("meta"):
        theirs = QwenImageTransformer2DModel()
        ours = MMDiT(qwen_image_config())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_theirs > 20e9
    assert abs(n_ours - n_theirs) / n_theirs < 0.005, (n_ours, n_theirs)
