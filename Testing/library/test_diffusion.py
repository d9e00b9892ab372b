"""Diffusion families: simplex noise, FiLM conditioning, patched restoration, RePaint, losses and restorations.

Networks here are tiny versions of the shipped configurations, so the file runs in well under a
minute on a CPU; the slices are real MRI (cached model-space IXI slices when present, else the
shipped MSLUB sample read with SimpleITK).
"""

import glob
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from monai.networks.schedulers import DDPMScheduler

from testsupport import SAMPLE
from NormativeADLib.models import FAMILIES, inferers
from NormativeADLib.models.conditioned import FiLMResnetBlock
from NormativeADLib.models.diffusion import timestep_sequence
from NormativeADLib.models.simplex import SimplexSettings, simplex_noise
from NormativeADLib.core.locations import resources_dir
from NormativeADLib.training.train import TrainSettings

DIFFUSION = ("ddpm", "pddpm", "cddpm", "autoddpm")
TINY_UNET = {"channels": [8, 16, 16], "attention_levels": [False, False, True], "num_res_blocks": 1,
             "num_head_channels": 16, "norm_num_groups": 8}
TINY = {
    "ddpm": {"unet": TINY_UNET, "diffusion": {"prediction": "epsilon", "noise": "simplex"}},
    "pddpm": {"unet": TINY_UNET, "diffusion": {"schedule": "cosine", "prediction": "sample", "loss": "l1",
                                               "noise": "simplex"}, "patch": 48},
    "cddpm": {"unet": TINY_UNET, "diffusion": {"schedule": "cosine", "prediction": "sample", "loss": "l1",
                                               "noise": "simplex"},
              "encoder": {"layers": [1, 1, 1, 1], "inplanes": [8, 8, 16, 16], "dim": 16}, "condition_dim": 16},
    "autoddpm": {"unet": TINY_UNET, "diffusion": {"prediction": "epsilon", "noise": "gaussian"}},
}
FAST = {  # few-step restoration settings, as in the small configs
    "ddpm": {"t": 250, "sampler": "ddim", "steps": 2},
    "pddpm": {"t": 500, "patch": 48, "stride": 48},
    "cddpm": {"t": [250, 500, 750]},
    "autoddpm": {"t": 300, "sampler": "ddim", "steps": 2, "inpaint_t": 50, "inpaint_steps": 2, "resamples": 2},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The networks here are tiny: a second intra-op thread only adds synchronisation, which on a
    busy 2-core machine made this file several times slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def slices() -> torch.Tensor:
    """8 real axial brain slices (8, 1, 96, 96) in [0, 1]."""
    cached = sorted(glob.glob(os.path.expanduser("~/.cache/normativead/prepared/*/*.npz")))
    if cached:
        with np.load(cached[0]) as z:
            image, brain = z["image"], z["brain"]
        keep = np.flatnonzero(brain.reshape(len(brain), -1).sum(1) >= 1500)
        picked = image[keep[np.linspace(0, len(keep) - 1, 8).round().astype(int)]]
        return torch.from_numpy(picked[:, None].astype(np.float32))
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "mslub_patient26_t1.nii.gz"))).astype(np.float32)
    z = np.linspace(0.35, 0.65, 8) * volume.shape[0]
    picked = torch.from_numpy(volume[z.astype(int)][:, None])
    picked = F.interpolate(picked, size=(96, 96), mode="bilinear", align_corners=False)
    high = torch.quantile(picked[picked > 0], 0.99)
    return (picked / high).clamp(0, 1)


def _tiny(family: str, seed: int = 0, randomise: bool = True) -> torch.nn.Module:
    """A tiny network of the family; randomise replaces MONAI's zero-initialised output convolutions
    so an untrained network does not return the same constant for every input."""
    torch.manual_seed(seed)
    net = FAMILIES[family].build(TINY[family])
    if randomise:
        with torch.no_grad():
            for p in net.parameters():
                if not p.any():
                    p.normal_(0, 0.05)
    return net


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- simplex noise ---------------------------------------------------------------------------

def test_simplex_noise_statistics_and_seeding():
    n = simplex_noise((6, 1, 96, 96), _gen(1))
    assert n.shape == (6, 1, 96, 96) and n.dtype == torch.float32 and torch.isfinite(n).all()
    per_slice = n.flatten(1)
    assert torch.allclose(per_slice.mean(1), torch.zeros(6), atol=1e-4)
    assert torch.allclose(per_slice.std(1), torch.ones(6), atol=1e-3)
    # spatially smooth (white noise would give about 0), and slices of one draw are not copies
    neighbour = torch.corrcoef(torch.stack([n[..., 1:].flatten(), n[..., :-1].flatten()]))[0, 1]
    assert neighbour > 0.7
    assert abs(torch.corrcoef(torch.stack([n[0].flatten(), n[1].flatten()]))[0, 1]) < 0.5
    # a seed fixes the noise, another seed changes it
    assert torch.equal(n, simplex_noise((6, 1, 96, 96), _gen(1)))
    assert not torch.allclose(n, simplex_noise((6, 1, 96, 96), _gen(2)))
    # a larger first wavelength gives smoother noise
    coarse = simplex_noise((6, 1, 96, 96), _gen(1), SimplexSettings(octaves=1, frequency=64))
    fine = simplex_noise((6, 1, 96, 96), _gen(1), SimplexSettings(octaves=1, frequency=8))
    roughness = [(z[..., 1:] - z[..., :-1]).abs().mean() for z in (coarse, fine)]
    assert roughness[0] < roughness[1] / 3


# --- the process and its step rule ----------------------------------------------------------

def test_jump_with_eta_one_is_the_ddpm_posterior():
    net = _tiny("ddpm", randomise=False)
    scheduler = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta")
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    x_t = torch.randn(2, 1, 8, 8)
    for t in (1, 120, 999):
        ab = net.alpha_bar(t)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        mean = net.jump(x0, eps, t, t - 1, eta=1.0, noise=torch.zeros_like(x0))
        assert torch.allclose(mean, scheduler._get_mean(t, x0, x_t), atol=1e-3)
        one = net.jump(x0, eps, t, t - 1, eta=1.0, noise=torch.ones_like(x0)) - mean
        assert torch.allclose(one, scheduler._get_variance(t).sqrt().expand_as(one), rtol=1e-3, atol=1e-6)
    assert timestep_sequence(250, 5) == [250, 200, 150, 100, 50]
    assert timestep_sequence(250, 250)[-1] == 1 and len(timestep_sequence(250, 250)) == 250
    assert timestep_sequence(500, 1) == [500]


# --- FiLM conditioning ----------------------------------------------------------------------

def test_film_condition_changes_the_output(slices):
    net = _tiny("cddpm").eval()
    unet = net.network
    blocks = [m for m in unet.modules() if isinstance(m, DiffusionUNetResnetBlock)]
    assert blocks and all(isinstance(b, FiLMResnetBlock) for b in blocks)
    x0 = slices[:2] * 2 - 1
    x_t = net.q_sample(x0, 500, torch.randn(x0.shape, generator=_gen(0)))
    t = torch.full((2,), 500)
    with torch.no_grad():
        same = unet(x_t, t, x0)
        again = unet(x_t, t, x0)
        other = unet(x_t, t, x0.flip(0))  # each slice conditioned on the other one
    assert torch.equal(same, again)
    assert (same - other).abs().mean() > 1e-3 * same.abs().mean()


# --- patched restoration --------------------------------------------------------------------

def test_patch_restoration_only_changes_the_patch(slices):
    net = _tiny("pddpm").eval()
    x0 = slices[:3] * 2 - 1
    box = (20, 30, 48, 48)
    with torch.no_grad():
        out = inferers.restore_patches(net, x0, [box], t=500, generator=_gen(0))
    inside = inferers.box_mask(x0.shape, box, x0.device).expand_as(x0)
    assert torch.equal(out[~inside], x0[~inside])
    assert (out[inside] - x0[inside]).abs().mean() > 1e-3
    assert inferers.grid_boxes((96, 96), 48) == [(0, 0, 48, 48), (0, 48, 48, 48), (48, 0, 48, 48), (48, 48, 48, 48)]
    assert [b[1] for b in inferers.grid_boxes((40, 100), 48)] == [0, 48, 52]


# --- RePaint --------------------------------------------------------------------------------

def test_repaint_keeps_the_known_region_and_changes_the_mask(slices):
    net = _tiny("autoddpm").eval()
    x0 = slices[:2] * 2 - 1
    mask = torch.zeros_like(x0, dtype=torch.bool)
    mask[..., 30:60, 20:50] = True
    with torch.no_grad():
        out = inferers.repaint(net, x0, mask, t=50, steps=3, resamples=2, generator=_gen(0))
        again = inferers.repaint(net, x0, mask, t=50, steps=3, resamples=2, generator=_gen(0))
    # after the last jump the known region is x0 noised to "clean", that is x0 itself
    assert torch.equal(out[~mask], x0[~mask])
    assert (out[mask] - x0[mask]).abs().mean() > 1e-3
    assert torch.equal(out, again)


def test_residual_mask_marks_the_largest_residual_inside_the_brain(slices):
    x = slices[:2]
    restored = x.clone()
    restored[..., 40:50, 40:50] = (restored[..., 40:50, 40:50] + 0.5).clamp(0, 1)
    mask = inferers.residual_mask(x, restored, quantile=0.97, dilation=3)
    brain = x > 0
    assert mask.dtype == torch.bool and not (mask & ~F.max_pool2d(brain.float(), 3, 1, 1).bool()).any()
    changed = torch.zeros_like(mask)
    changed[..., 40:50, 40:50] = True
    assert (mask & changed).sum() > 0.5 * (mask.sum())


# --- every family: loss and restoration -----------------------------------------------------

@pytest.mark.parametrize("family", DIFFUSION)
def test_loss_is_finite_and_decreases(family, slices):
    f = FAMILIES[family]
    net = _tiny(family, randomise=False)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):  # the same timesteps and noise every step: the loss on them must fall
        loss = f.loss(net, slices, _gen(5))
        assert loss.ndim == 0 and torch.isfinite(loss)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("family", DIFFUSION)
def test_restore_shape_range_and_determinism(family, slices):
    f = FAMILIES[family]
    net = _tiny(family).eval()
    x = slices[:3]
    with torch.inference_mode():
        a = f.restore(net, x, FAST[family], _gen(7))
        b = f.restore(net, x, FAST[family], _gen(7))
        c = f.restore(net, x, FAST[family], _gen(8))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a - x).abs().mean() > 1e-3


# --- shipped configurations -----------------------------------------------------------------

@pytest.mark.parametrize("family", DIFFUSION)
def test_configs_build_their_networks(family):
    for size in ("small", "published"):
        config = json.loads((resources_dir() / "Configs" / f"{family}_{size}.json").read_text())
        assert config["family"] == family
        assert set(config) >= {"id", "version", "contrast", "description", "network", "restoration",
                               "postprocess", "intensity", "training"}
        TrainSettings(**config["training"])
        if size == "small":
            net = FAMILIES[family].build(config["network"])
            megabytes = sum(p.numel() * 4 for p in net.state_dict().values()) / 1e6
            assert megabytes < 40, f"{family} small weights would be {megabytes:.0f} MB"


@pytest.mark.parametrize("family", DIFFUSION)
def test_restore_under_bf16_autocast(family, slices):
    """The engine restores under bf16 autocast on CUDA; the same dtype mix, run on the CPU."""
    net = _tiny(family).eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = FAMILIES[family].restore(net, slices[:2], FAST[family], _gen(0))
    assert y.dtype == torch.float32 and y.shape == (2, 1, 96, 96) and 0 <= y.min() and y.max() <= 1


def test_full_ddpm_chain_and_the_restoration_engine(slices):
    from NormativeADLib.core.card import ModelCard
    from NormativeADLib.core.grid import ModelGrid
    from NormativeADLib.models.registry import LoadedModel
    from NormativeADLib.pipeline.restore import restore_volume

    net = _tiny("ddpm").eval()
    with torch.inference_mode():
        chain = FAMILIES["ddpm"].restore(net, slices[:2], {"t": 6, "sampler": "ddpm"}, _gen(0))
        again = FAMILIES["ddpm"].restore(net, slices[:2], {"t": 6, "sampler": "ddpm"}, _gen(0))
    assert torch.equal(chain, again) and chain.shape == (2, 1, 96, 96)
    card = ModelCard(id="tiny-cddpm", family="cddpm", version="0", contrast="T1", description="",
                     grid=ModelGrid(), network=TINY["cddpm"], restoration=FAST["cddpm"])
    model = LoadedModel(card, _tiny("cddpm").eval())
    image = slices[:, 0].numpy()
    brain = image > 0
    cpu = torch.device("cpu")
    a = restore_volume(model, image, brain, cpu, seed=4, batch_size=4)
    b = restore_volume(model, image, brain, cpu, seed=4, batch_size=4)
    assert a.shape == image.shape and a.dtype == np.float32 and np.array_equal(a, b)
    # Each slice draws its own noise: another batch size gives the same restoration (up to
    # float32 kernel differences between batch sizes), another seed a different one.
    c = restore_volume(model, image, brain, cpu, seed=4, batch_size=3)
    np.testing.assert_allclose(c, a, atol=1e-4)
    d = restore_volume(model, image, brain, cpu, seed=5, batch_size=4)
    assert np.abs(d - a).max() > 1e-3
    assert not a[~brain].any() and 0 <= a.min() and a.max() <= 1
