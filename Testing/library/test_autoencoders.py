"""The autoencoder families on real slices: losses fall when trained, restorations are deterministic."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from NormativeADLib.models import FAMILIES
from NormativeADLib.core.locations import resources_dir


@pytest.fixture(scope="module")
def slices(sample_scan):
    """Eight axial 96x96 slices of the real sample scan, scaled to [0, 1]."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_scan)))[60:140:10, 61:157, 43:139]
    array = np.clip(array / np.percentile(array, 99), 0, 1).astype(np.float32)
    return torch.from_numpy(array[:, None])


@pytest.mark.parametrize("config", ["ae_small", "vae_small"])
def test_loss_falls_and_restoration_is_deterministic(config, slices):
    torch.manual_seed(0)
    settings = json.loads((resources_dir() / "Configs" / f"{config}.json").read_text())
    family = FAMILIES[settings["family"]]
    net = family.build(settings["network"])
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(15):
        loss = family.loss(net, slices, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    net.eval()
    with torch.inference_mode():
        a = family.restore(net, slices, settings.get("restoration", {}), None)
        b = family.restore(net, slices, settings.get("restoration", {}), None)
    assert a.shape == slices.shape
    torch.testing.assert_close(a, b)
