"""The restoration engine: a model's family restores a volume's axial slices in batches.

Device auto-selection (cuda, mps, cpu), batches sized to the device, mixed precision on GPU,
progress and cancellation between batches, and a seeded generator for stochastic families.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..measures import anomaly
from ..core.errors import Cancelled, InputError
from ..core.options import DEVICE, DEVICES
from ..models.base import SliceGenerators
from ..models.registry import LoadedModel
from ..models.synthetic_batches import slab_indices

ProgressFn = Callable[[int, int], None]
# Slices with fewer brain voxels than this are left as they are (nothing to restore).
MIN_BRAIN_VOXELS_PER_SLICE = 50
SEED_STRIDE = 1_000_003  # slice z of a run with seed s draws its noise from seed s * SEED_STRIDE + z


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    note: str  # what the user should see, e.g. why auto fell back to the CPU


def select_device(requested: str = DEVICE.default) -> DeviceChoice:
    """auto picks cuda, then mps, then cpu and says so; an unavailable explicit choice is an error."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        if cuda:
            return DeviceChoice(torch.device("cuda"), f"cuda ({torch.cuda.get_device_name(0)})")
        if mps:
            return DeviceChoice(torch.device("mps"), "mps (Apple GPU)")
        return DeviceChoice(torch.device("cpu"), "cpu (no CUDA or MPS GPU found)")
    available = {"cpu": True, "cuda": cuda, "mps": mps}
    if requested not in available:
        raise InputError(f"unknown device '{requested}'; use one of {', '.join(DEVICES)}.")
    if not available[requested]:
        raise InputError(f"device {requested} is not available on this machine; use --device auto or cpu.")
    return DeviceChoice(torch.device(requested), requested)


def batch_size_for(device: torch.device, slice_shape: tuple[int, int], cpu_batch: int) -> int:
    """Slices per batch: bounded by free GPU memory on CUDA, the family's cache-friendly batch elsewhere."""
    if device.type != "cuda":
        return cpu_batch
    free, _ = torch.cuda.mem_get_info(device)
    # a generous per-slice allowance for activations of the families' U-Nets in half precision
    per_slice = slice_shape[0] * slice_shape[1] * 4 * 2048
    return int(max(1, min(256, free // 2 // per_slice)))


def restore_volume(model: LoadedModel, image: np.ndarray, brain: np.ndarray, device: torch.device,
                   seed: int = 0, batch_size: int | None = None, progress: ProgressFn | None = None,
                   cancel: threading.Event | None = None) -> np.ndarray:
    """Pseudo-healthy counterpart of a model-space volume (z, y, x) in [0, 1].

    Only slices holding brain are restored; the others are returned unchanged. A whole-volume family
    (the intensity baseline) restores the volume at once.
    """
    if model.family.whole_volume:
        if progress:
            progress(1, 1)
        return np.where(brain, model.family.restore_volume(image, brain, model.card.restoration), 0.0).astype(np.float32)
    slices = brain_slice_indices(brain)
    restored = image.copy()
    batch_size = batch_size or batch_size_for(device, image.shape[1:], model.family.cpu_batch)
    network = model.network.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    done = 0
    with torch.inference_mode(), autocast:
        for start in range(0, len(slices), batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled("restoration cancelled")
            index = slices[start:start + batch_size]
            x = torch.from_numpy(image[index][:, None]).to(device)
            generators = SliceGenerators(torch.Generator(device=device).manual_seed(seed * SEED_STRIDE + int(z))
                                         for z in index)
            y = model.family.restore(network, x, model.card.restoration, generators)
            restored[index] = y[:, 0].float().clamp(0, 1).cpu().numpy()
            done += len(index)
            if progress:
                progress(done, len(slices))
    return np.where(brain, restored, 0.0).astype(np.float32)


def brain_slice_indices(brain: np.ndarray) -> np.ndarray:
    """The axial slices with enough brain to restore or score."""
    return np.flatnonzero(brain.reshape(brain.shape[0], -1).sum(1) >= MIN_BRAIN_VOXELS_PER_SLICE)


def score_volume(model: LoadedModel, image: np.ndarray, restored: np.ndarray, brain: np.ndarray,
                 device: torch.device, batch_size: int | None = None,
                 cancel: threading.Event | None = None, contrast: str | None = None,
                 others: dict | None = None) -> np.ndarray:
    """The model's anomaly score map (z, y, x) of a volume and its restoration, post-processed as the card says.

    Restoration families score the residual (anomaly.score_map). A family with a `probability` method
    (SADM: a segmenter on the scan and its restoration) scores with it, slice by slice; its heatmap is
    that probability, zeroed outside the eroded brain and median filtered like a residual. A study
    family (`probability_study`) reads the volume as its `contrast` (default: the model's first) beside
    `others`, {contrast: (image, restored)} of the same study on the same grid.
    """
    family = model.family
    if not family.segments:
        return anomaly.score_map(image, restored, brain, model.card.postprocess)
    study = family.reads_study
    if study:
        volumes = {**(others or {}), contrast or model.card.trained_contrasts[0]: (image, restored)}
        image, restored, present = study_channels(volumes, brain.shape)
    slices = brain_slice_indices(brain)
    probability = np.zeros(brain.shape, np.float32)
    batch_size = batch_size or batch_size_for(device, brain.shape[1:], family.cpu_batch)
    network = model.network.to(device)
    k = getattr(network, "context", 0)  # a 2.5D segmenter (sadm.py) reads k slices each side of the scored one
    with torch.inference_mode():
        for start in range(0, len(slices), batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled("scoring cancelled")
            index = slices[start:start + batch_size]
            if study:
                b = torch.from_numpy(np.ascontiguousarray(brain[index][:, None], np.float32)).to(device)
                x, r = (torch.from_numpy(np.ascontiguousarray(a[:, index].swapaxes(0, 1), np.float32)).to(device)
                        for a in (image, restored))
                shown = torch.from_numpy(np.repeat(present[None], len(index), 0)).to(device)
                segment = functools.partial(family.probability_study, network, present=shown)
            else:  # each slice between its k neighbours each side, as in training (k = 0: the slice alone)
                slab = slab_indices(index, k, len(brain))
                x, b = (torch.from_numpy(np.ascontiguousarray(a[slab], np.float32)).to(device) for a in (image, brain))
                r = torch.from_numpy(np.ascontiguousarray(restored[index][:, None], np.float32)).to(device)
                segment = functools.partial(family.probability, network)
            p = segment(x, r, b)
            if model.card.postprocess.mirror:
                p = mirror_averaged(segment, p, x, r, b)
            probability[index] = p[:, 0].cpu().numpy()
    return anomaly.postprocess_score(probability, brain, model.card.postprocess)


def mirror_averaged(segment: Callable, p: torch.Tensor, *slices: torch.Tensor) -> torch.Tensor:
    """The mean of a segmenter's probability p of slices and of its probability of the same slices mirrored
    left to right (the model grid's last axis), mirrored back: test-time augmentation as nnU-Net's
    mirroring; a healthy brain is nearly symmetric, so the mirror is another healthy-looking view."""
    mirrored = segment(*(s.flip(-1) for s in slices))
    return 0.5 * (p + mirrored.flip(-1))


def study_channels(volumes: dict, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A study's images and restorations stacked (K, z, y, x) in STUDY_CONTRASTS order, zero where the
    study lacks a contrast, and which are present (K,) float32."""
    from ..synthesis.synth_study import STUDY_CONTRASTS

    unknown = set(volumes) - set(STUDY_CONTRASTS)
    if unknown:
        raise InputError(f"contrast(s) {sorted(unknown)} cannot be read by a study model; "
                         f"it reads {', '.join(STUDY_CONTRASTS)}.")
    empty = np.zeros(shape, np.float32)
    images = np.stack([volumes[c][0] if c in volumes else empty for c in STUDY_CONTRASTS])
    restored = np.stack([volumes[c][1] if c in volumes else empty for c in STUDY_CONTRASTS])
    return images, restored, np.array([c in volumes for c in STUDY_CONTRASTS], np.float32)
