"""Training and evaluation of image restoration (denoising, deblurring) against scikit-image's
classical methods, on the photographs bundled with scikit-image, split by image (vision/data.py).

Degradations (pixels in [0, 1]):
    denoise:  y = x + n,  n ~ N(0, (sigma/255)^2)       (sigma on the 0..255 scale, as in DnCNN)
    deblur:   y = g * x + n, g a Gaussian PSF of std ``blur_sigma`` px (reflect padding), n of std 2/255

Training: random size x size patches of the training images, a fresh degradation every step; one
model for every noise level (sigma ~ U[sigma_min, sigma_max] per patch, the blind setting of
DnCNN-B, Zhang et al. 2017, Sec. 4.1: sigma in [0, 55]); L2 loss, AdamW with warmup-cosine
(train/optim.py, train/schedule.py). With ``noise_map=True`` the model is non-blind (FFDNet): it is
given the patch's sigma, as the classical baselines below are. ``checkpoint_every`` writes
``checkpoint.pt`` (model, optimiser, schedule, generator, losses, CPU seconds) so that a run can be
resumed, or stopped early and evaluated at its last checkpoint (``train_until``).

Classical baselines, run in the same script on the same noisy images (skimage.restoration):
    nl_means  ``denoise_nl_means(y, h=0.8 sigma, sigma=sigma, patch_size=5, patch_distance=6,
              fast_mode=True)`` (the scikit-image gallery's "h = 0.8 * sigma_est" setting, sigma known)
    wavelet   ``denoise_wavelet(y, sigma=sigma)`` (BayesShrink, soft thresholds, the known sigma)
    tv        ``denoise_tv_chambolle(y, weight)``, weight grid-searched per sigma on training patches
    deblur:   ``wiener(y, psf, balance)`` (balance grid-searched on training patches) and
              ``richardson_lucy(y, psf, num_iter=30)``
PSNR by ``skimage.metrics.peak_signal_noise_ratio`` (data_range 1) on the outputs clipped to [0, 1].

Self-ensemble (``self_ensemble=True``, an extra "model_x8" row beside "model"): the network is run on the
8 rotations / flips of the degraded image, each output turned back and the 8 averaged (the "geometric
self-ensemble" of Timofte et al. 2016, "Seven ways to improve example-based single image super resolution",
and Lim et al. 2017, EDSR's "+" results; test-time only, the classical methods are run once as before).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchssm.vision.data import random_patches

NL_MEANS_H = 0.8  # h = 0.8 sigma (scikit-image gallery, "Non-local means denoising for preserving textures")
TV_WEIGHTS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3)
WIENER_BALANCES = (0.003, 0.01, 0.03, 0.1, 0.3)
BLUR_NOISE = 2.0  # noise std (0..255 scale) added after the blur


def gaussian_psf(blur_sigma: float) -> np.ndarray:
    """Normalised Gaussian PSF of std ``blur_sigma`` px on a (2 ceil(3 sigma) + 1)^2 support."""
    if blur_sigma <= 0:
        raise ValueError(f"blur_sigma must be > 0; got {blur_sigma}")
    r = int(math.ceil(3 * blur_sigma))
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / blur_sigma) ** 2)
    psf = np.outer(g, g)
    return psf / psf.sum()


def degrade(clean: torch.Tensor, task: str, sigma, generator: torch.Generator, blur_sigma: float = 1.6) -> torch.Tensor:
    """clean (b, 1, H, W) in [0, 1] -> degraded; ``sigma`` a float or (b,) tensor on the 0..255 scale."""
    sigma = torch.as_tensor(sigma, dtype=clean.dtype).reshape(-1, 1, 1, 1) / 255.0
    if task == "deblur":
        psf = torch.from_numpy(gaussian_psf(blur_sigma)).to(clean.dtype)[None, None]
        r = psf.shape[-1] // 2
        clean = F.conv2d(F.pad(clean, (r, r, r, r), mode="reflect"), psf)
    elif task != "denoise":
        raise ValueError(f"task must be 'denoise' or 'deblur'; got {task!r}")
    return clean + sigma * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)


def restore(model: nn.Module, image: np.ndarray, sigma: float | None = None, self_ensemble: bool = False) -> np.ndarray:
    """Run ``model`` on one grey image (H, W), reflect-padded to its size multiple; output clipped to [0, 1].
    ``sigma`` (0..255 scale) is handed to a non-blind model (``noise_map=True``) and ignored by a blind one.
    ``self_ensemble``: the mean of the outputs on the 8 rotations / flips of ``image``, each turned back
    (module docstring)."""
    if self_ensemble:
        outs = []
        for flip in (False, True):
            for k in range(4):
                view = np.rot90(image[:, ::-1] if flip else image, k)
                y = np.rot90(restore(model, np.ascontiguousarray(view), sigma), -k)
                outs.append(y[:, ::-1] if flip else y)
        return np.mean(outs, axis=0)
    m = getattr(model, "multiple", 1)
    h, w = image.shape
    ph, pw = (-h) % m, (-w) % m
    if sigma is None and getattr(model, "noise_map", False):
        raise ValueError("this model is non-blind (noise_map=True): pass the noise level sigma")
    x = torch.from_numpy(image).float()[None, None]
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    with torch.no_grad():
        if sigma is not None and getattr(model, "noise_map", False):
            y = model(x, sigma / 255.0)[0, 0, :h, :w]
        else:
            y = model(x)[0, 0, :h, :w]
    return y.clamp(0, 1).double().numpy()


def train_restorer(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    task: str = "denoise",
    steps: int = 300,
    batch: int = 8,
    patch: int = 48,
    sigma_range=(5.0, 55.0),
    blur_sigma: float = 1.6,
    lr: float = 2e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    checkpoint=None,
    checkpoint_every: int = 0,
    train_until: int | None = None,
    log=None,
    stats: dict | None = None,
) -> list:
    """Train on random patches (module docstring); returns the per-step training losses (all steps so far
    when resumed). ``checkpoint`` (a path): resume from it when it exists, and write it every
    ``checkpoint_every`` steps and at the end. ``train_until``: stop after this step (the schedule still
    spans ``steps``); ``log``: a text file that gets one line per 100 steps (step, mean loss, CPU s);
    ``stats``: a dict that receives ``trained_steps`` and ``cpu_s`` (training CPU seconds, resumed parts included)."""
    import time
    from pathlib import Path

    from tqdm.auto import tqdm

    from torchssm.fileio import atomic_write
    from torchssm.train.optim import build_optimizer
    from torchssm.train.schedule import build_scheduler

    gen = torch.Generator().manual_seed(seed)
    opt = build_optimizer(model, lr, weight_decay)
    sched = build_scheduler(opt, steps, warmup_steps=max(1, steps // 20))
    losses, start, cpu_before = [], 0, 0.0
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["steps"] != steps:
            raise ValueError(f"{checkpoint} is a run of {state['steps']} steps; got steps={steps}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        losses, start, cpu_before = state["losses"], state["step"], state["cpu_s"]
    stop = steps if train_until is None else max(start, min(steps, train_until))
    t0 = time.process_time()

    def save(step: int) -> None:
        if checkpoint is None:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "generator": gen.get_state(),
            "losses": losses,
            "step": step,
            "steps": steps,
            "cpu_s": cpu_before + time.process_time() - t0,
        }
        atomic_write(checkpoint, lambda p: torch.save(state, p))

    non_blind = getattr(model, "noise_map", False)
    model.train()
    bar = tqdm(range(start, stop), desc=f"train {task}", disable=not progress)
    for step in bar:
        clean = random_patches(images, batch, patch, gen)  # (b, 1, p, p)
        lo, hi = sigma_range if task == "denoise" else (BLUR_NOISE, BLUR_NOISE)
        sigma = lo + (hi - lo) * torch.rand(batch, generator=gen)
        noisy = degrade(clean, task, sigma, gen, blur_sigma)
        loss = F.mse_loss(model(noisy, sigma / 255.0) if non_blind else model(noisy), clean)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.2e}")
        if log is not None and (step + 1) % 100 == 0:
            cpu = cpu_before + time.process_time() - t0
            with open(log, "a") as f:
                f.write(f"step {step + 1} loss {np.mean(losses[-100:]):.4e} cpu_s {cpu:.0f}\n")
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < stop:
            save(step + 1)
    if stop > start or (checkpoint is not None and not Path(checkpoint).exists()):
        save(stop)
    model.eval()
    if stats is not None:
        stats.update(trained_steps=stop, cpu_s=cpu_before + time.process_time() - t0)
    return losses


def psnr(restored: np.ndarray, clean: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(clean, np.clip(restored, 0, 1), data_range=1.0))


def classical_denoisers(noisy: np.ndarray, sigma: float, tv_weight: float) -> dict:
    """{name: denoised} for nl_means, wavelet and tv (module docstring); sigma on the 0..255 scale. The
    wavelet baseline is left out (and the results say so) where PyWavelets is not installed."""
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, denoise_wavelet

    s = sigma / 255.0
    out = {
        "nl_means": denoise_nl_means(noisy, h=NL_MEANS_H * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True)
    }
    if wavelet_available():
        out["wavelet"] = denoise_wavelet(noisy, sigma=s, rescale_sigma=True)
    out["tv"] = denoise_tv_chambolle(noisy, weight=tv_weight)
    return out


def wavelet_available() -> bool:
    """scikit-image's denoise_wavelet needs PyWavelets (``pywt``), an optional dependency of scikit-image."""
    try:
        import pywt  # noqa: F401
    except ImportError:
        return False
    return True


def classical_deblurrers(blurred: np.ndarray, blur_sigma: float, balance: float) -> dict:
    from skimage.restoration import richardson_lucy, wiener

    psf = gaussian_psf(blur_sigma)
    return {
        "wiener": wiener(blurred, psf, balance),
        "richardson_lucy": richardson_lucy(np.clip(blurred, 0, 1), psf, num_iter=30),
    }


def _tuning_patches(images, seed: int, n: int = 8, size: int = 96) -> list:
    gen = torch.Generator().manual_seed(seed + 1)
    return [p[0].double().numpy() for p in random_patches(images, n, size, gen)]


def tune_tv_weight(train_images, sigma: float, seed: int = 0, weights=TV_WEIGHTS) -> float:
    """The TV weight of best mean PSNR on noisy training patches (never the test images)."""
    from skimage.restoration import denoise_tv_chambolle

    patches = _tuning_patches(train_images, seed)
    gen = torch.Generator().manual_seed(seed + 2)
    noisy = [degrade(torch.from_numpy(p)[None, None], "denoise", sigma, gen)[0, 0].numpy() for p in patches]
    scores = [np.mean([psnr(denoise_tv_chambolle(y, weight=w), p) for y, p in zip(noisy, patches)]) for w in weights]
    return float(weights[int(np.argmax(scores))])


def tune_wiener_balance(train_images, blur_sigma: float, seed: int = 0, balances=WIENER_BALANCES) -> float:
    from skimage.restoration import wiener

    patches = _tuning_patches(train_images, seed)
    gen = torch.Generator().manual_seed(seed + 2)
    psf = gaussian_psf(blur_sigma)
    blurred = [
        degrade(torch.from_numpy(p)[None, None], "deblur", BLUR_NOISE, gen, blur_sigma)[0, 0].numpy() for p in patches
    ]
    scores = [np.mean([psnr(wiener(y, psf, b), p) for y, p in zip(blurred, patches)]) for b in balances]
    return float(balances[int(np.argmax(scores))])


def center_crop(image: np.ndarray, size) -> np.ndarray:
    if size is None:
        return image
    h, w = image.shape
    s = min(size, h, w)
    r, c = (h - s) // 2, (w - s) // 2
    return image[r : r + s, c : c + s]


def run_restoration(
    out_dir,
    *,
    task: str = "denoise",
    mixer: str = "cross_scan",
    mixer_kwargs: dict | None = None,
    width: int = 16,
    depths=(1, 1, 1),
    steps: int = 300,
    batch: int = 8,
    patch: int = 48,
    lr: float = 2e-3,
    sigmas=(15, 25, 50),
    blur_sigma: float = 1.6,
    crop: int | None = 256,
    seed: int = 0,
    progress: bool = True,
    noise_map: bool = False,
    unshuffle: int = 1,
    sigma_range=(5.0, 55.0),
    checkpoint_every: int = 0,
    train_until: int | None = None,
    init_from=None,
    self_ensemble: bool = False,
) -> dict:
    """Train the U-Net on the training photographs, evaluate it and the classical methods on the held-out
    ones (center crops of ``crop`` px, None = full images); write ``results.json``, ``model.pt`` and
    ``figure.png`` under ``out_dir``; return the results. With ``checkpoint_every`` the run keeps
    ``checkpoint.pt`` and ``train.log`` there and resumes from the checkpoint when rerun. ``init_from``: a
    ``model.pt`` of a run with the same architecture, loaded before training (fine-tuning); with
    ``train_until=0`` nothing is trained (an evaluation of that model). ``self_ensemble``: also the
    x8 self-ensemble of the model ("model_x8")."""
    import time
    from pathlib import Path

    from torchssm.fileio import atomic_write, atomic_write_json
    from torchssm.vision.data import RESTORATION_TEST, RESTORATION_TRAIN, skimage_images
    from torchssm.vision.restoration import RestorationUNet

    torch.manual_seed(seed)
    out = Path(out_dir)
    train_imgs = skimage_images(RESTORATION_TRAIN)
    test_imgs = [center_crop(img, crop) for img in skimage_images(RESTORATION_TEST)]
    model = RestorationUNet(1, width, depths, mixer, mixer_kwargs, noise_map=noise_map, unshuffle=unshuffle)
    if init_from is not None:
        model.load_state_dict(torch.load(init_from, weights_only=True))
    out.mkdir(parents=True, exist_ok=True)
    stats: dict = {}
    losses = train_restorer(
        model,
        train_imgs,
        task=task,
        steps=steps,
        batch=batch,
        patch=patch,
        lr=lr,
        sigma_range=sigma_range,
        blur_sigma=blur_sigma,
        seed=seed,
        progress=progress,
        checkpoint=out / "checkpoint.pt" if checkpoint_every else None,
        checkpoint_every=checkpoint_every,
        train_until=train_until,
        log=out / "train.log" if checkpoint_every else None,
        stats=stats,
    )
    train_cpu = stats["cpu_s"]
    t_eval = time.process_time()
    atomic_write(out / "model.pt", lambda p: torch.save(model.state_dict(), p))
    gen = torch.Generator().manual_seed(seed + 100)
    levels = list(sigmas) if task == "denoise" else [BLUR_NOISE]
    table, examples = {}, {}
    for sigma in levels:
        if task == "denoise":
            tv_w = tune_tv_weight(train_imgs, sigma, seed)
            settings = {"tv_weight": tv_w}
        else:
            bal = tune_wiener_balance(train_imgs, blur_sigma, seed)
            settings = {"wiener_balance": bal}
        rows = {}
        for name, clean in zip(RESTORATION_TEST, test_imgs):
            y = degrade(torch.from_numpy(clean)[None, None], task, sigma, gen, blur_sigma)[0, 0].numpy()
            level = sigma if task == "denoise" else BLUR_NOISE
            outs = {"degraded": y, "model": restore(model, y, level)}
            if self_ensemble:
                outs["model_x8"] = restore(model, y, level, self_ensemble=True)
            outs.update(
                classical_denoisers(y, sigma, tv_w) if task == "denoise" else classical_deblurrers(y, blur_sigma, bal)
            )
            rows[name] = {k: psnr(v, clean) for k, v in outs.items()}
            if name == RESTORATION_TEST[0] and (sigma == 25 or len(levels) == 1):
                examples = {"clean": clean, **outs}
        mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in next(iter(rows.values()))}
        table[str(sigma)] = {"per_image": rows, "mean": mean, "settings": settings}
    results = {
        "task": task,
        "mixer": mixer,
        "mixer_kwargs": mixer_kwargs,
        "width": width,
        "depths": list(depths),
        "parameters": sum(p.numel() for p in model.parameters()),
        "noise_map": noise_map,
        "unshuffle": unshuffle,
        "sigma_range": list(sigma_range),
        "init_from": None if init_from is None else str(init_from),
        "steps": steps,
        "trained_steps": stats["trained_steps"],
        "batch": batch,
        "patch": patch,
        "lr": lr,
        "seed": seed,
        "crop": crop,
        "train_cpu_s": train_cpu,
        "eval_cpu_s": time.process_time() - t_eval,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "self_ensemble": self_ensemble,
        "test_images": list(RESTORATION_TEST),
        "train_images": list(RESTORATION_TRAIN),
        "wavelet_baseline": wavelet_available() or "skipped: PyWavelets (pywt) is not installed",
        "results": table,
    }
    atomic_write_json(out / "results.json", results, indent=2)
    if examples:
        plot_restoration(out / "figure.png", examples)
    return results


def plot_restoration(path, images: dict, crop: int = 128) -> str:
    """A row of grey panels (clean, degraded, model, classical ...) titled with their PSNR, center-cropped."""
    from torchssm.analysis.plots import new_figure, save_figure

    clean = images["clean"]
    fig, axes = new_figure(len(images), 1, size=(2.6, 2.8))
    for ax, (name, img) in zip(axes, images.items()):
        ax.imshow(center_crop(np.clip(img, 0, 1), crop), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name if name == "clean" else f"{name}\n{psnr(img, clean):.2f} dB", fontsize=9)
        ax.set_axis_off()
    return save_figure(fig, path)
