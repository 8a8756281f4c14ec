import torch

from huabu.deployments.backends.mmdit.config import TextEncoderConfig
from huabu.deployments.backends.mmdit.text import BOS, EOS, PAD, ByteTokenizer, TextEncoder, truncate_utf8


def test_tokenizer_is_utf8_bytes_with_fixed_length() -> None:
    tok = ByteTokenizer(max_bytes=16)
    out = tok(["红色", "red", "左边 red"])
    assert out.ids.shape == (3, 18)
    assert out.ids[0, :8].tolist() == [BOS, *"红色".encode(), EOS]
    assert out.ids[0, 8:].eq(PAD).all()
    assert out.mask.sum(1).tolist() == [8, 5, 12]
    assert out.truncated == [False, False, False]


def test_truncation_keeps_whole_characters_and_is_reported() -> None:
    data, cut = truncate_utf8("圆形圆形", 7)  # 4 chars x 3 bytes: 7 bytes would split the third
    assert cut and data.decode() == "圆形"
    assert ByteTokenizer(8)(["a" * 9]).truncated == [True]


def test_encoder_ignores_padding_and_other_prompts() -> None:
    torch.manual_seed(0)
    enc = TextEncoder(TextEncoderConfig(width=32, depth=2, num_heads=4, max_bytes=24)).eval()
    with torch.no_grad():
        alone, mask, _ = enc.encode(["a red circle"])
        batched, _, _ = enc.encode(["a red circle", "一个很长很长的中文提示词"])
    assert alone.shape == (1, 26, 32)
    torch.testing.assert_close(alone[0], batched[0])
    assert alone[0, ~mask[0]].abs().sum() == 0
