"""NAFNet back-end: block structure, any size, references, a few CPU training steps, save/load."""

from __future__ import annotations

import pytest
import torch

from difix_ns.fixers.config import FixerConfig
from difix_ns.fixers.nafnet import LayerNorm2d, NAFBlock, NAFNet, NAFNetFixer, SimpleGate


def test_block_is_identity_at_init_and_layernorm_matches_torch():
    block = NAFBlock(8)
    x = torch.randn(2, 8, 5, 7)
    torch.testing.assert_close(block(x), x)  # beta = gamma = 0 (skip-init)
    ln = LayerNorm2d(8)
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (8,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref, atol=1e-5, rtol=1e-5)
    assert SimpleGate()(torch.ones(1, 4, 2, 2)).shape == (1, 2, 2, 2)


def test_any_size_and_refs():
    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1), use_reference=True)
    fixer = NAFNetFixer(net).eval()
    assert fixer.size_multiple == 4 and fixer.supports_refs
    x = torch.rand(2, 3, 13, 22)
    y0 = fixer.fix(x)
    y1 = fixer.fix(x, torch.rand(2, 3, 3, 10, 10))
    assert y0.shape == y1.shape == x.shape
    for p in net.parameters():  # make the reference path matter
        torch.nn.init.normal_(p, std=0.1)
    assert not torch.allclose(fixer.fix(x), fixer.fix(x, torch.rand(2, 1, 3, 13, 22)))


def test_bad_config():
    with pytest.raises(ValueError, match="same length"):
        NAFNet(enc_blk_nums=(1, 1), dec_blk_nums=(1,))


def test_trains_on_cpu():
    torch.manual_seed(0)
    fixer = NAFNetFixer(NAFNet(width=4, enc_blk_nums=(1,), middle_blk_num=1, dec_blk_nums=(1,)))
    clean = torch.rand(2, 3, 8, 8)
    noisy = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    opt = torch.optim.Adam(fixer.parameters(), lr=5e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.mse_loss(fixer(noisy), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    fixer = NAFNetFixer(NAFNet(width=8, enc_blk_nums=(1,), dec_blk_nums=(1,)))
    for p in fixer.parameters():
        torch.nn.init.normal_(p, std=0.05)
    fixer.save_pretrained(tmp_path / "naf")
    loaded = FixerConfig(backend="nafnet", checkpoint=str(tmp_path / "naf"), device="cpu").setup()
    x = torch.rand(1, 3, 11, 9)
    torch.testing.assert_close(loaded.fix(x), fixer.eval().fix(x))
    (tmp_path / "naf" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing diffusion_pytorch_model.safetensors"):
        NAFNetFixer.from_pretrained(tmp_path / "naf")


def test_default_is_small():
    n = sum(p.numel() for p in NAFNet().parameters())
    assert n < 500_000
    assert FixerConfig(backend="nafnet", random_init=True, device="cpu").setup().size_multiple == 8
