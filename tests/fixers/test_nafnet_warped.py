"""NAFNet with depth-warped reference views as input channels (`warped_references`): training, save/load, old
checkpoints, bad shapes."""

from __future__ import annotations

import json

import pytest
import torch

from difix_ns.fixers.nafnet import NAFNet, NAFNetFixer


def _net(count: int) -> NAFNet:
    return NAFNet(width=8, enc_blk_nums=(1,), middle_blk_num=1, dec_blk_nums=(1,), warped_references=count)


def _task(seed: int = 0):
    """A blurred render, and two warped views that hold the sharp image where their masks say so."""
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(4, 3, 8, 8, generator=generator)
    blurred = torch.nn.functional.avg_pool2d(clean, 3, stride=1, padding=1, count_include_pad=False)
    masks = (torch.rand(4, 2, 1, 8, 8, generator=generator) > 0.3).float()
    warped = clean[:, None] * masks
    return blurred, warped, masks, clean


def test_warped_views_are_used_and_help_training():
    blurred, warped, masks, clean = _task()
    losses = {}
    for count in (0, 2):
        torch.manual_seed(0)
        net = _net(count)
        opt = torch.optim.Adam(net.parameters(), lr=5e-3)
        extra = {"warped": warped, "warped_mask": masks} if count else {}
        for _ in range(40):
            loss = torch.nn.functional.mse_loss(net(blurred, **extra), clean)
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[count] = loss.item()
    # Measured: 0.009 with the warped views, 0.055 without (40 steps). The sharp texture comes through them.
    assert losses[2] < 0.5 * losses[0], losses


def test_save_load_roundtrip_keeps_the_field(tmp_path):
    torch.manual_seed(0)
    fixer = NAFNetFixer(_net(2))
    for p in fixer.parameters():
        torch.nn.init.normal_(p, std=0.05)
    fixer.save_pretrained(tmp_path / "naf")
    assert json.loads((tmp_path / "naf" / "config.json").read_text())["warped_references"] == 2
    loaded = NAFNetFixer.from_pretrained(tmp_path / "naf")
    blurred, warped, masks, _ = _task(1)
    assert loaded.net.config.warped_references == 2
    torch.testing.assert_close(
        loaded.net(blurred, warped=warped, warped_mask=masks), fixer.net(blurred, warped=warped, warped_mask=masks)
    )


def test_a_checkpoint_without_the_field_loads_as_before(tmp_path):
    """A config.json written before `warped_references` existed: same weights, same outputs."""
    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=(1,), dec_blk_nums=(1,))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    net.save_pretrained(str(tmp_path / "old"))
    config_path = tmp_path / "old" / "config.json"
    config = json.loads(config_path.read_text())
    del config["warped_references"]
    config_path.write_text(json.dumps(config))
    loaded = NAFNetFixer.from_pretrained(tmp_path / "old")
    assert loaded.net.config.warped_references == 0
    assert loaded.net.intro.in_channels == 3
    x = torch.rand(1, 3, 10, 7)
    torch.testing.assert_close(loaded.eval().fix(x), NAFNetFixer(net).eval().fix(x))


def test_bad_warped_inputs_raise_value_errors():
    net = _net(2)
    blurred, warped, masks, _ = _task()
    with pytest.raises(ValueError, match="warped"):
        net(blurred)
    with pytest.raises(ValueError, match="warped"):
        net(blurred, warped=warped[:, :1], warped_mask=masks[:, :1])
    with pytest.raises(ValueError, match="warped_mask"):
        net(blurred, warped=warped, warped_mask=masks[..., :4])
    with pytest.raises(ValueError, match="warped_references=0"):
        _net(0)(blurred, warped=warped, warped_mask=masks)
    with pytest.raises(ValueError, match="warped_references"):
        _net(-1)
