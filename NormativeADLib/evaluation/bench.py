"""`normativead bench`: seconds per volume, slices per second and peak memory, against a plain baseline.

The baseline runs the same network slice by slice in fp32 with no batching (torch.no_grad only);
the engine is `restore_volume` as the product runs it. Both run in the same process on the same
prepared volume; figures are medians of several runs, and the ratio is baseline / engine.
`--config` times a config's network with untrained weights (speed does not depend on them), for
sizes no machine here has trained.
"""

from __future__ import annotations

import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from .. import io
from ..pipeline.analysis import analyse
from ..pipeline.preprocess import prepare
from ..models.registry import LoadedModel, build_network
from ..core.options import DEVICE
from ..pipeline.restore import brain_slice_indices, restore_volume, select_device


def baseline_restore(model: LoadedModel, image: np.ndarray, brain: np.ndarray, device: torch.device) -> None:
    slices = brain_slice_indices(brain)
    network = model.network.to(device)
    with torch.no_grad():
        for z in slices:
            x = torch.from_numpy(image[z][None, None]).to(device)
            model.family.restore(network, x, model.card.restoration, None).cpu()


def _timed(fn, runs: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def run(scan_path: Path, model: LoadedModel, device_name: str = DEVICE.default, runs: int = 3,
        whole_case: bool = True) -> dict:
    device = select_device(device_name).device
    scan = io.read_scan(scan_path)
    prepared = prepare(scan, model.card.grid, None, model.card.percentiles,
                       bias_correction=model.card.bias_correction)
    n_slices = len(brain_slice_indices(prepared.brain))
    restore_volume(model, prepared.image, prepared.brain, device)  # warm-up
    engine = _timed(lambda: restore_volume(model, prepared.image, prepared.brain, device), runs, device)
    baseline = _timed(lambda: baseline_restore(model, prepared.image, prepared.brain, device), runs, device)
    pipeline = _timed(lambda: analyse(scan_path, model, device=device_name), runs, device) if whole_case else []
    engine_s, baseline_s = statistics.median(engine), statistics.median(baseline)
    return {
        "model": model.card.id, "weights": "trained" if whole_case else "untrained: speed only",
        "parameters": sum(p.numel() for p in model.network.parameters()),
        "device": str(device), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "case": scan_path.name, "slices_restored": n_slices, "runs": runs,
        "restore_s_median": round(engine_s, 3), "baseline_restore_s_median": round(baseline_s, 3),
        "speedup_vs_baseline": round(baseline_s / engine_s, 2),
        "slices_per_s": round(n_slices / engine_s, 1),
        "whole_case_s_median": round(statistics.median(pipeline), 2) if pipeline else None,
        "peak_memory_mb": round(_peak_memory_mb(device)),
        "all_runs_s": {"restore": engine, "baseline": baseline, "whole_case": pipeline},
    }


def untrained(config_name: str) -> LoadedModel:
    """A config's network with its initial weights: restores noise, but at the trained model's speed
    (published sizes can be timed before a GPU has trained them)."""
    from ..training.train import card_from_config, load_config

    card = card_from_config(load_config(config_name))
    torch.manual_seed(0)
    return LoadedModel(card, build_network(card).eval())

