"""The Serpent-style U-Net: shapes and gradients with every 2-D mixer, bad input, it overfits one
patch; the degradations and the classical baselines' plumbing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torchssm.vision.restoration import RestorationUNet
from torchssm.vision.restore import degrade, gaussian_psf, restore

MIXERS = {
    "cross_scan": {"mixer": "mamba", "mixer_kwargs": {"d_state": 4}},
    "spatial_mamba": {"d_state": 1},
    "s4nd": {"d_state": 4},
    "attention": {},
}


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_unet_shapes_and_gradients(mixer):
    torch.manual_seed(0)
    net = RestorationUNet(1, 4, (1, 1, 1), mixer, MIXERS[mixer])
    x = torch.rand(2, 1, 8, 12, requires_grad=True)
    y = net(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_unet_bad_input():
    net = RestorationUNet(1, 4, (1, 1, 1), "s4nd", {"d_state": 4})
    with pytest.raises(ValueError, match="not divisible by 4"):
        net(torch.rand(1, 1, 8, 10))
    with pytest.raises(ValueError, match="channels=1"):
        net(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="not a 2-D mixer"):
        RestorationUNet(1, 4, (1,), "lru")
    with pytest.raises(ValueError, match="depths"):
        RestorationUNet(1, 4, ())


# cross_scan (4 Mamba scans per level) is the slowest vision test (~28 s on the loaded machine): slow;
# the spatial_mamba case keeps the overfit check in the default run
@pytest.mark.parametrize("mixer", [pytest.param("cross_scan", marks=pytest.mark.slow), "spatial_mamba"])
def test_unet_overfits_one_noisy_patch(mixer):
    """Denoising a single fixed 16x16 patch: 150 Adam steps bring the error far below the noise."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    clean = (0.5 + 0.3 * torch.sin(6 * xx) * torch.cos(4 * yy))[None, None]  # (1, 1, 16, 16)
    noisy = degrade(clean, "denoise", 25.0, gen)
    net = RestorationUNet(1, 8, (1, 1), mixer, MIXERS[mixer])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    noise_mse = F.mse_loss(noisy, clean).item()
    for _ in range(150):
        loss = F.mse_loss(net(noisy), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * noise_mse  # > 13 dB better than the noisy input


def test_degradations():
    gen = torch.Generator().manual_seed(0)
    clean = torch.full((4, 1, 64, 64), 0.5)
    noisy = degrade(clean, "denoise", torch.tensor([10.0, 20.0, 30.0, 40.0]), gen)
    stds = (noisy - clean).std(dim=(1, 2, 3)) * 255
    torch.testing.assert_close(stds, torch.tensor([10.0, 20.0, 30.0, 40.0]), rtol=0.06, atol=0)
    psf = gaussian_psf(1.5)
    assert psf.shape == (11, 11) and abs(psf.sum() - 1) < 1e-12
    step = torch.zeros(1, 1, 32, 32)
    step[..., 16:] = 1
    blurred = degrade(step, "deblur", 0.0, gen, blur_sigma=1.5)
    assert 0.3 < blurred[0, 0, 10, 16].item() < 0.7 and blurred[0, 0, 10, 0].item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="task"):
        degrade(step, "inpaint", 1.0, gen)


def test_restore_pads_to_the_size_multiple():
    net = RestorationUNet(1, 4, (1, 1, 1), "s4nd", {"d_state": 4})
    img = np.random.default_rng(0).random((13, 10))
    out = restore(net, img)
    assert out.shape == img.shape and 0 <= out.min() and out.max() <= 1


def test_classical_baselines_run_and_beat_the_noise():
    pytest.importorskip("skimage")
    from torchssm.vision.restore import classical_denoisers, psnr

    yy, xx = np.mgrid[:64, :64] / 64.0
    clean = 0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy)
    gen = torch.Generator().manual_seed(0)
    noisy = degrade(torch.from_numpy(clean)[None, None], "denoise", 25.0, gen)[0, 0].numpy()
    for name, out in classical_denoisers(noisy, 25.0, tv_weight=0.1).items():
        assert psnr(out, clean) > psnr(noisy, clean) + 3, name


def test_unet_and_patch_embed_share_the_image_check():
    """RestorationUNet and PatchEmbed refuse a non-image with one and the same message (vision.patch.check_images)."""
    from torchssm.vision.patch import PatchEmbed

    net = RestorationUNet(1, 4, (1, 1, 1), "s4nd", {"d_state": 4})
    emb = PatchEmbed(1, 8, patch_size=2)
    want = "images must have shape (batch, channels=1, height, width); got (1, 8, 8)"
    for module in (net, emb):
        with pytest.raises(ValueError) as err:
            module(torch.rand(1, 8, 8))
        assert str(err.value) == want
        with pytest.raises(ValueError, match=r"channels=1, height, width\); got \(\)$"):
            module([[0.0]])


def test_noise_map_and_unshuffle_options():
    """FFDNet's options: the non-blind model needs sigma (and changes with it), the unshuffled one keeps
    the image shape and its size multiple; bad use is refused with one line."""
    torch.manual_seed(0)
    net = RestorationUNet(1, 4, (1, 1), "spatial_mamba", {"d_state": 1}, noise_map=True, unshuffle=2)
    assert net.multiple == 4
    x = torch.rand(2, 1, 8, 12, requires_grad=True)
    y = net(x, torch.tensor([0.1, 0.2]))
    assert y.shape == x.shape
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    with torch.no_grad():
        assert not torch.allclose(net(x, 0.05), net(x, 0.3))  # the noise level reaches the output
    with pytest.raises(ValueError, match="pass sigma"):
        net(x)
    with pytest.raises(ValueError, match="not divisible by 4"):
        net(torch.rand(1, 1, 8, 10), 0.1)
    with pytest.raises(ValueError, match="blind model"):
        RestorationUNet(1, 4, (1,), "s4nd", {"d_state": 4})(torch.rand(1, 1, 8, 8), 0.1)
    with pytest.raises(ValueError, match="unshuffle"):
        RestorationUNet(1, 4, (1,), "s4nd", {"d_state": 4}, unshuffle=0)
    img = np.random.default_rng(0).random((13, 10))
    assert restore(net, img, 25.0).shape == img.shape
    with pytest.raises(ValueError, match="non-blind"):
        restore(net, img)


def test_training_resumes_from_its_checkpoint_exactly(tmp_path):
    """4 steps in one go == 2 steps, stop (train_until), resume for 2: same weights and losses."""
    from torchssm.vision.restore import train_restorer

    images = [np.random.default_rng(i).random((24, 24)) for i in range(3)]

    def run(ckpt, until=None):
        torch.manual_seed(0)
        net = RestorationUNet(1, 4, (1, 1), "spatial_mamba", {"d_state": 1}, noise_map=True)
        kw = dict(steps=4, batch=2, patch=8, progress=False, checkpoint=ckpt, checkpoint_every=1)
        stats: dict = {}
        losses = train_restorer(net, images, train_until=until, stats=stats, **kw)
        assert stats["trained_steps"] == len(losses) and stats["cpu_s"] > 0
        return net, losses

    ref, ref_losses = run(tmp_path / "a.pt")
    _, first = run(tmp_path / "b.pt", until=2)
    assert len(first) == 2 and torch.load(tmp_path / "b.pt", weights_only=False)["step"] == 2
    net, losses = run(tmp_path / "b.pt")
    assert losses == ref_losses and len(losses) == 4
    for (name, p), q in zip(ref.state_dict().items(), net.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="4 steps"):
        train_restorer(net, images, steps=5, batch=2, patch=8, progress=False, checkpoint=tmp_path / "b.pt")


class _ShiftRight(torch.nn.Module):
    """Not rotation-equivariant: out[i, j] = x[i, j - 1] (column 0 repeated)."""

    def forward(self, x):
        return torch.cat([x[..., :1], x[..., :-1]], dim=-1)


def test_self_ensemble_turns_each_view_back_and_averages():
    """x8 self-ensemble: an identity model gives the image back (each inverse transform is right), and a
    non-equivariant one gives the mean of its 8 views' outputs turned back (here: of 4 shift directions)."""
    image = np.random.default_rng(0).random((6, 8))
    identity = torch.nn.Identity()
    np.testing.assert_allclose(restore(identity, image, self_ensemble=True), image, atol=1e-6)
    shift = _ShiftRight()
    got = restore(shift, image, self_ensemble=True)
    pad = np.pad(image, 1, mode="edge")
    right, left = pad[1:-1, :-2], pad[1:-1, 2:]  # x[i, j-1], x[i, j+1]
    down, up = pad[:-2, 1:-1], pad[2:, 1:-1]  # x[i-1, j], x[i+1, j]
    np.testing.assert_allclose(got, (right + left + down + up) / 4, atol=1e-6)
    assert not np.allclose(got, restore(shift, image))
