"""The restoration engine: determinism, progress, cancellation, device choice."""

import threading

import numpy as np
import pytest
import torch

from NormativeADLib.core.errors import Cancelled, InputError
from NormativeADLib.pipeline.preprocess import prepare
from NormativeADLib.io import read_scan
from NormativeADLib.pipeline.restore import restore_volume, select_device


@pytest.fixture(scope="module")
def prepared(sample_scan, shipped_model):
    return prepare(read_scan(sample_scan), shipped_model.card.grid, None, shipped_model.card.percentiles)


def test_restoration_is_deterministic_and_batch_independent(prepared, shipped_model):
    cpu = torch.device("cpu")
    a = restore_volume(shipped_model, prepared.image, prepared.brain, cpu, seed=3, batch_size=16)
    again = restore_volume(shipped_model, prepared.image, prepared.brain, cpu, seed=3, batch_size=16)
    b = restore_volume(shipped_model, prepared.image, prepared.brain, cpu, seed=3, batch_size=5)
    np.testing.assert_array_equal(a, again)
    # other batch sizes pick other convolution kernels: equal to float32 rounding (seen: 1.05e-5)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert a.shape == prepared.image.shape and a.dtype == np.float32
    assert not a[~prepared.brain].any() and 0 <= a.min() and a.max() <= 1
    assert np.abs(a - prepared.image)[prepared.brain].mean() > 0  # it is not the identity


def test_progress_reaches_every_brain_slice(prepared, shipped_model):
    calls = []
    restore_volume(shipped_model, prepared.image, prepared.brain, torch.device("cpu"),
                   progress=lambda done, total: calls.append((done, total)))
    assert calls[-1][0] == calls[-1][1] > 40
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_cancel_stops_between_batches(prepared, shipped_model):
    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        cancel.set()

    with pytest.raises(Cancelled):
        restore_volume(shipped_model, prepared.image, prepared.brain, torch.device("cpu"), batch_size=4,
                       progress=progress, cancel=cancel)
    assert seen == [4]


def test_device_choice():
    assert select_device("cpu").device.type == "cpu"
    assert select_device("auto").device.type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        assert "cpu" in select_device("auto").note or "mps" in select_device("auto").note
        with pytest.raises(InputError, match="not available"):
            select_device("cuda")
    with pytest.raises(InputError, match="unknown device"):
        select_device("tpu")


def test_cpu_batches_follow_the_family(prepared):
    """Diffusion U-Nets restore in batches of 4 on a CPU (faster there than 16), autoencoders in 16."""
    from NormativeADLib.models import registry

    z = np.flatnonzero(prepared.brain.reshape(len(prepared.brain), -1).sum(1) > 2000)[:6]
    for model_id, expected in (("ddpm-ixi-t1", [4, 6]), ("ae-ixi-t1", [6])):
        calls = []
        restore_volume(registry.load_model(model_id), prepared.image[z], prepared.brain[z], torch.device("cpu"),
                       progress=lambda done, total: calls.append(done))
        assert calls == expected, model_id
