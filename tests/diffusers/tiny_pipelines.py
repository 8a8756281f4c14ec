"""Tiny random-weight diffusers pipelines built offline (no hub access here): a Qwen-Image text-to-image
pipeline and a text-only PixArt-Sigma one, with the real component classes at toy sizes, saved with
``save_pretrained`` so that the backend loads them exactly as it loads a downloaded checkpoint. The one
place tests build them."""

from __future__ import annotations

from pathlib import Path

import torch

# The Qwen chat template the pipeline wraps each prompt in, plus words, so that the trained
# tokenizer has real merges; any text tokenises (byte-level BPE).
_TOKENIZER_CORPUS = [
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n",
    "<|im_end|>\n<|im_start|>assistant\n",
    "a red circle on a blue square, a green triangle, a yellow star in the sky, a cat, a dog, a castle",
]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]


def build_tokenizer(vocab_size: int = 400):  # -> transformers.Qwen2Tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TOKENIZER_CORPUS * 4, trainer)
    return Qwen2Tokenizer(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>", unk_token=None)


def build_qwen_image(directory: Path, seed: int = 0) -> Path:
    """A ``QwenImagePipeline`` of ~1 M random parameters in ``directory``; returns it."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_dim = 16
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": text_dim,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1_000_000.0,
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": text_dim,
        },
        hidden_size=text_dim,
        vocab_size=len(tokenizer),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    z_dim = 4
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=z_dim * 4,
        out_channels=z_dim,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=text_dim,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=z_dim * 6,
        z_dim=z_dim,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    # Qwen-Image's own scheduler config: resolution-dependent exponential shift.
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        invert_sigmas=False,
        max_image_seq_len=8192,
        max_shift=0.9,
        num_train_timesteps=1000,
        shift=1.0,
        shift_terminal=0.02,
        stochastic_sampling=False,
        time_shift_type="exponential",
        use_beta_sigmas=False,
        use_dynamic_shifting=True,
        use_exponential_sigmas=False,
        use_karras_sigmas=False,
    )
    pipeline = QwenImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
    pipeline.save_pretrained(directory)
    return directory


def build_lora(pipeline_dir: Path, path: Path, rank: int = 4, seed: int = 1) -> Path:
    """A random LoRA for the tiny Qwen-Image transformer's attention, saved as diffusers saves
    adapters (one ``.safetensors`` file at ``path``)."""
    from diffusers import QwenImagePipeline, QwenImageTransformer2DModel
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel.from_pretrained(pipeline_dir / "transformer")
    # Random B as well as A: peft starts B at zero, which would be an adapter that changes nothing.
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False)
    transformer.add_adapter(config)
    with torch.no_grad():  # strong enough that its scale shows in a 32x32 image
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:
                parameter.mul_(30.0)
    QwenImagePipeline.save_lora_weights(
        path.parent, transformer_lora_layers=get_peft_model_state_dict(transformer), weight_name=path.name
    )
    return path


# Words for the T5 tokenizer's Unigram vocabulary; anything else still tokenises (as <unk> pieces).
_T5_CORPUS = [
    "a red circle on a blue square, a green triangle, a yellow star in the sky, a cat, a dog, a castle",
    "a slow one, another picture of the sea at night with the moon and clouds over the hills",
]


def build_t5_tokenizer(vocab_size: int = 120):  # -> transformers.T5TokenizerFast
    """A T5 tokenizer (SentencePiece-style Unigram) trained here: ``<pad>``, ``</s>``, ``<unk>`` are
    ids 0, 1, 2 as in T5's own vocabulary."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(_T5_CORPUS * 4, trainer)
    vocab = [(piece, score) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def build_pixart_sigma(directory: Path, seed: int = 0) -> Path:
    """A text-only ``PixArtSigmaPipeline`` (diffusers pairs no inpainting or image-to-image pipeline
    with it) of ~0.1 M random parameters in ``directory``; returns it. Like the real one, its VAE
    downsamples 8x and its transformer packs 2x2 latents; its ``sample_size`` (4 latents, 32 pixels)
    is none that PixArt's resolution binning knows."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = build_t5_tokenizer()
    text_dim = 16
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=text_dim,
            d_kv=8,
            d_ff=32,
            num_layers=2,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).eval()
    z_dim = 4
    transformer = PixArtTransformer2DModel(
        sample_size=4,
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=z_dim,
        out_channels=z_dim * 2,  # learned sigma, as PixArt predicts it
        cross_attention_dim=16,
        caption_channels=text_dim,
        norm_num_groups=1,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=z_dim,
        norm_num_groups=4,
        sample_size=32,
    )
    scheduler = DPMSolverMultistepScheduler()  # PixArt-Sigma's own scheduler class
    pipeline = PixArtSigmaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipeline.save_pretrained(directory)
    return directory
