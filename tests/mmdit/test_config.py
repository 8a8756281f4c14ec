import pytest

from huabu.deployments.backends.mmdit.config import ConfigError, MMDiTConfig, preset, qwen_image_config, tiny_config


def test_tiny_default_is_valid_and_round_trips() -> None:
    cfg = tiny_config()
    assert cfg.head_dim == 32 and sum(cfg.rope_axes) == 32
    assert MMDiTConfig.from_dict(cfg.to_dict()) == cfg


def test_qwen_image_preset_has_published_dimensions() -> None:
    cfg = preset("qwen-image")
    assert (cfg.depth, cfg.num_heads, cfg.head_dim, cfg.width) == (60, 24, 128, 3072)
    assert (cfg.text_width, cfg.latent_channels, cfg.patch_size, cfg.rope_axes) == (3584, 16, 2, (16, 56, 56))
    assert cfg == qwen_image_config()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width": 130}, "must be divisible by num_heads"),
        ({"rope_axes": (8, 8, 8)}, "must sum to the head dim 32"),
        ({"rope_axes": (9, 11, 12)}, "must be even"),
        ({"depth": 0}, "depth must be positive"),
        ({"text_width": 64}, "must equal the text encoder width"),
        ({"default_size": (30, 32)}, "must be a multiple of 8"),
        ({"prediction": "epsilon"}, "prediction must be"),
    ],
)
def test_invalid_configs_say_what_to_change(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(**overrides)


def test_unknown_keys_and_presets_are_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown MMDiT config keys"):
        MMDiTConfig.from_dict({"depht": 3})
    with pytest.raises(ConfigError, match="choose one of"):
        preset("sdxl")
