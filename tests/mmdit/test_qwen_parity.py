"""The qwen-image preset is Qwen-Image's transformer: diffusers' weights convert into it (sharded,
both ways, bit-exact) and the converted model computes what diffusers' computes.

Random diffusers weights at small widths with Qwen-Image's exact layer structure. Bounds:
float32 max abs error <= 1e-5 (measured ~5e-7); bfloat16 max abs error <= 2^-5 x max|output|
(measured 0.031 on outputs of magnitude ~2.3, i.e. one bfloat16 step; diffusers' own bfloat16
run is 0.05 away from its float32 one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from huabu.deployments.backends.mmdit import convert
from huabu.deployments.backends.mmdit.config import qwen_image_config
from huabu.deployments.backends.mmdit.model import MMDiT

TEXT_WIDTH = 96
# (depth, heads, head dim, rope axes): head dims 64 and 128, Qwen-Image's axes at 128.
SHAPES = [(1, 2, 64, (16, 24, 24)), (2, 2, 64, (8, 28, 28)), (3, 1, 128, (16, 56, 56))]


def test_qwen_image_preset_matches_diffusers_parameter_count() -> None:
    from diffusers import QwenImageTransformer2DModel

    with torch.device("meta"):
        theirs = QwenImageTransformer2DModel()
        ours = MMDiT(qwen_image_config())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_theirs > 20e9
    assert abs(n_ours - n_theirs) / n_theirs < 0.005, (n_ours, n_theirs)


def test_published_config_converts_to_the_preset() -> None:
    from diffusers import QwenImageTransformer2DModel

    with torch.device("meta"):
        theirs = QwenImageTransformer2DModel()
    assert convert.config_from_diffusers(dict(theirs.config)) == qwen_image_config()
    assert convert.diffusers_shapes(qwen_image_config()) == {k: v.shape for k, v in theirs.state_dict().items()}


def diffusers_model(depth: int, heads: int, head_dim: int, axes: tuple[int, int, int], seed: int = 0, **extra: bool):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    model = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=depth,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=TEXT_WIDTH,
        axes_dims_rope=axes,
        **extra,
    ).eval()
    with torch.no_grad():  # norm weights start at 1 and biases at 0: randomise so a mix-up shows
        for name, param in model.named_parameters():
            if param.dim() == 1 and "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.02 * torch.randn_like(param))
    return model


def save_sharded(model: torch.nn.Module, path: Path) -> Path:
    model.save_pretrained(path, max_shard_size="150KB", safe_serialization=True)  # type: ignore[operator]
    assert len(list(path.glob("diffusion_pytorch_model-*.safetensors"))) > 2  # q, k, v straddle shards
    return path


def inputs(grid: tuple[int, int], batch: int = 2, text_len: int = 9, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, grid[0] * grid[1], 64, generator=g)
    text = torch.randn(batch, text_len, TEXT_WIDTH, generator=g)
    mask = torch.ones(batch, text_len, dtype=torch.bool)
    mask[0, text_len - 3 :] = False  # the first prompt is padded
    t = torch.rand(batch, generator=g)
    return tokens, text, mask, t


def both_forwards(theirs, ours: MMDiT, grid: tuple[int, int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, text, mask, t = inputs(grid)
    with torch.inference_mode():
        ref = theirs(
            hidden_states=tokens.to(dtype),
            encoder_hidden_states=text.to(dtype),
            encoder_hidden_states_mask=mask,
            timestep=t,
            img_shapes=[[(1, *grid)]] * len(t),
            return_dict=False,
        )[0]
        out = ours(tokens.to(dtype), text.to(dtype), mask, t, grid)
    return out.float(), ref.float()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"depth{s[0]}-heads{s[1]}x{s[2]}")
def test_converted_forward_matches_diffusers_float32(tmp_path: Path, shape) -> None:
    theirs = diffusers_model(*shape)
    convert.diffusers_to_own(save_sharded(theirs, tmp_path / "diffusers"), tmp_path / "own", max_shard_bytes=100_000)
    assert len(list((tmp_path / "own").glob("model-*.safetensors"))) > 1
    ours = convert.load_own(tmp_path / "own")
    for grid in [(6, 4), (5, 3), (4, 4)]:  # non-square, odd sides (the centring), square
        out, ref = both_forwards(theirs, ours, grid, torch.float32)
        assert ref.abs().max() > 0.5  # a real signal, not a zero output
        assert (out - ref).abs().max().item() <= 1e-5, grid


def test_converted_forward_matches_diffusers_bfloat16(tmp_path: Path) -> None:
    theirs = diffusers_model(*SHAPES[1]).to(torch.bfloat16)
    convert.diffusers_to_own(save_sharded(theirs, tmp_path / "diffusers"), tmp_path / "own")
    ours = convert.load_own(tmp_path / "own")
    assert all(p.dtype == torch.bfloat16 for p in ours.parameters())  # the checkpoint's dtype is kept
    out, ref = both_forwards(theirs, ours, (6, 4), torch.bfloat16)
    assert (out - ref).abs().max().item() <= 2**-5 * ref.abs().max().item()


def test_zero_cond_t_with_one_image_is_the_same_function(tmp_path: Path) -> None:
    theirs = diffusers_model(*SHAPES[0], zero_cond_t=True)
    ours = MMDiT(convert.config_from_diffusers(dict(theirs.config))).eval()
    ours.load_state_dict(convert.state_dict_from_diffusers(theirs.state_dict()), strict=True)
    out, ref = both_forwards(theirs, ours, (4, 6), torch.float32)
    assert (out - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_is_bit_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    from safetensors.torch import load_file

    theirs = diffusers_model(*SHAPES[2]).to(dtype)
    src = save_sharded(theirs, tmp_path / "diffusers")
    convert.diffusers_to_own(src, tmp_path / "own", max_shard_bytes=120_000)
    convert.own_to_diffusers(tmp_path / "own", tmp_path / "back", max_shard_bytes=90_000)

    def tensors(path: Path) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for file in path.glob("diffusion_pytorch_model-*.safetensors"):
            out |= load_file(str(file))
        return out

    before, after = tensors(src), tensors(tmp_path / "back")
    assert sorted(before) == sorted(after)
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and torch.equal(after[name], tensor), name
    back = json.loads((tmp_path / "back" / "config.json").read_text())
    assert convert.config_from_diffusers(back) == convert.config_from_diffusers(dict(theirs.config))


def test_cli_converts(tmp_path: Path) -> None:
    from huabu.cluster.cli import main

    src = save_sharded(diffusers_model(*SHAPES[0]), tmp_path / "pipeline" / "transformer")
    assert main(["convert", str(src.parent), str(tmp_path / "own")]) == 0  # a pipeline root works too
    assert main(["convert", str(tmp_path / "own"), str(tmp_path / "back"), "--to", "diffusers"]) == 0
    assert (tmp_path / "back" / "diffusion_pytorch_model.safetensors.index.json").is_file()


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path: Path) -> None:
    src = save_sharded(diffusers_model(*SHAPES[0]), tmp_path / "diffusers")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config | {"joint_attention_dim": 64}))
    with pytest.raises(
        convert.ConversionError, match=r"tensor txt_in\.weight has shape \(128, 96\), the config needs \(128, 64\)"
    ):
        convert.diffusers_to_own(src, tmp_path / "own")
    assert not (tmp_path / "own" / "config.json").exists()


def test_own_checkpoint_shape_mismatch_refuses_to_load(tmp_path: Path) -> None:
    convert.diffusers_to_own(save_sharded(diffusers_model(*SHAPES[0]), tmp_path / "diffusers"), tmp_path / "own")
    config = json.loads((tmp_path / "own" / "config.json").read_text())
    (tmp_path / "own" / "config.json").write_text(json.dumps(config | {"patch_size": 4}))
    with pytest.raises(
        convert.ConversionError, match=r"tensor final\.linear\.bias has shape \(64,\), the config needs \(256,\)"
    ):
        convert.load_own(tmp_path / "own")


def test_missing_shard_names_the_file(tmp_path: Path) -> None:
    src = save_sharded(diffusers_model(*SHAPES[0]), tmp_path / "diffusers")
    victim = sorted(src.glob("diffusion_pytorch_model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(convert.ConversionError, match=f"shard {victim.name} .* is missing"):
        convert.diffusers_to_own(src, tmp_path / "own")


def test_missing_tensor_is_never_loaded_partially(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    convert.diffusers_to_own(save_sharded(diffusers_model(*SHAPES[0]), tmp_path / "d"), tmp_path / "own", 100_000)
    shard = sorted((tmp_path / "own").glob("model-*.safetensors"))[0]
    tensors = load_file(str(shard))
    dropped = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != dropped}, str(shard))
    with pytest.raises(convert.ConversionError, match=f"first {dropped}"):
        convert.load_own(tmp_path / "own")
