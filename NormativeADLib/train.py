"""`normativead train`: fit a family on healthy scans, calibrate it, and write its card and weights.

Subjects are split into train / validation / calibration (Resources/Splits); the network sees
train subjects only, validation picks the best epoch and gives the healthy restoration figures,
calibration subjects give the thresholds. The card records the command that produced it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.transforms import (Compose, RandAdjustContrast, RandBiasField, RandGaussianNoise,
                              RandGaussianSmooth)
from safetensors.torch import save_file

from . import anomaly, data, metrics
from .card import ModelCard, PostProcess, sha256, write_card
from .errors import InputError, ModelError
from .grid import ModelGrid
from .paths import home, resources_dir
from .registry import LoadedModel, build_network, load_model
from .restore import restore_volume, select_device

Log = Callable[[str], None]
WEIGHTS_FILE = "weights.safetensors"


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    min_brain_voxels: int = 1000  # training slices hold at least this much brain
    slice_step: int = 1  # every n-th axial slice (neighbours at 2 mm are near-duplicates)
    augment_prob: float = 0.5
    seed: int = 0


def load_config(path: str | Path, family: str | None = None) -> dict:
    """A config file, or a shipped one by name: `ae_small`, or `small` with family `ae`."""
    path = Path(path)
    if not path.is_file():
        name = path.name.removesuffix(".json")
        configs = resources_dir() / "Configs"
        shipped = configs / f"{name}.json"
        if family and not shipped.is_file():
            shipped = configs / f"{family}_{name}.json"
        if not shipped.is_file():
            known = sorted(p.stem for p in configs.glob("*.json"))
            raise FileNotFoundError(f"config {path} not found (nor shipped as {shipped.name}); shipped: {', '.join(known)}")
        path = shipped
    config = json.loads(path.read_text())
    if family and config.get("family") != family:
        raise InputError(f"config {path.name} is for family {config.get('family')}, not {family}.")
    return config


def card_from_config(config: dict) -> ModelCard:
    """The card a config describes, before training: no weights or figures yet; thresholds only where
    the config states them as a rule (the intensity baseline's z-scores)."""
    grid = ModelGrid.from_dict(config["grid"]) if "grid" in config else ModelGrid()
    percentiles = list(config.get("intensity", {}).get("percentiles", (1.0, 99.0)))
    return ModelCard(
        id=config["id"], family=config["family"], version=config["version"], contrast=config["contrast"],
        description=config["description"], grid=grid, network=config["network"],
        restoration=config.get("restoration", {}), intensity={"method": "percentile", "percentiles": percentiles},
        postprocess=PostProcess(**config.get("postprocess", {})),
        thresholds=dict(config.get("thresholds", {})), default_threshold=config.get("default_threshold", "fpr5"),
    )


def default_split_path() -> Path:
    return resources_dir() / "Splits" / "ixi_t1.json"


def brain_slices(images: list[np.ndarray], brains: list[np.ndarray], min_voxels: int,
                 step: int = 1) -> torch.Tensor:
    """Every step-th axial slice (N, 1, H, W) holding at least min_voxels of brain."""
    keep = [img[::step][b[::step].reshape(len(b[::step]), -1).sum(1) >= min_voxels]
            for img, b in zip(images, brains)]
    return torch.from_numpy(np.concatenate(keep)[:, None].astype(np.float32))


def augmenter(prob: float, seed: int) -> Compose:
    """Contrast and acquisition augmentation (METHODS.md: gamma, bias field, blur, noise)."""
    transform = Compose([
        RandAdjustContrast(prob=prob, gamma=(0.6, 1.6)),
        RandBiasField(prob=prob, coeff_range=(0.0, 0.3), degree=3),
        RandGaussianSmooth(prob=prob * 0.5, sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0)),
        RandGaussianNoise(prob=prob * 0.5, std=0.02),
    ])
    transform.set_random_state(seed=seed)
    return transform


def augment_batch(batch: torch.Tensor, transform: Compose) -> torch.Tensor:
    """Augment each slice, keep the background at zero and intensities in [0, 1]."""
    out = torch.stack([torch.as_tensor(transform(x)) for x in batch]).float()
    return (out * (batch > 0)).clamp(0, 1)


def fit(family, network: torch.nn.Module, train: torch.Tensor, validation: torch.Tensor,
        settings: TrainSettings, checkpoint: Path, log: Log, device: torch.device = torch.device("cpu")) -> dict:
    """Train on device with Adam; keep the epoch with the lowest validation loss; resume from checkpoint.

    Slices stay in CPU memory and are augmented there; each batch moves to the device.
    """
    torch.manual_seed(settings.seed)
    network.to(device)
    optimiser = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=settings.epochs)
    state = {"epoch": 0, "best_loss": float("inf"), "best": None, "history": []}
    if checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=False, map_location=device)
        network.load_state_dict(saved["network"])
        optimiser.load_state_dict(saved["optimiser"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        log(f"resumed from {checkpoint} at epoch {state['epoch']}")
    transform = augmenter(settings.augment_prob, settings.seed + state["epoch"])
    generator = torch.Generator().manual_seed(settings.seed + state["epoch"])
    # noise is drawn on the device (a CPU generator cannot serve CUDA tensors); on the CPU, one generator
    noise = generator if device.type == "cpu" else torch.Generator(device=device).manual_seed(settings.seed + state["epoch"])
    for epoch in range(state["epoch"], settings.epochs):
        started = time.perf_counter()
        network.train()
        order = torch.randperm(len(train), generator=generator)
        losses = []
        for start in range(0, len(order), settings.batch_size):
            batch = augment_batch(train[order[start:start + settings.batch_size]], transform).to(device)
            loss = family.loss(network, batch, noise)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        scheduler.step()
        val_loss = validation_loss(family, network, validation, settings.batch_size, device)
        seconds = time.perf_counter() - started
        state["history"].append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                                 "seconds": round(seconds, 1)})
        if val_loss < state["best_loss"]:
            state["best_loss"] = val_loss
            state["best"] = {k: v.detach().clone() for k, v in network.state_dict().items()}
        state["epoch"] = epoch + 1
        torch.save({"network": network.state_dict(), "optimiser": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(), "state": state}, checkpoint)
        log(f"epoch {epoch + 1}/{settings.epochs} train {np.mean(losses):.4f} val {val_loss:.4f} ({seconds:.0f} s)")
    network.load_state_dict(state["best"])
    return state


def validation_loss(family, network: torch.nn.Module, slices: torch.Tensor, batch_size: int,
                    device: torch.device = torch.device("cpu")) -> float:
    network.eval()
    with torch.inference_mode():
        losses = [family.loss(network, slices[i:i + batch_size].to(device), None).item() * len(slices[i:i + batch_size])
                  for i in range(0, len(slices), batch_size)]
    return float(sum(losses) / len(slices))


def healthy_figures(model: LoadedModel, images, brains, device: torch.device = torch.device("cpu")) -> dict:
    """Restoration of unseen healthy scans: SSIM, PSNR and MAE inside the brain, mean over scans."""
    rows = [metrics.restoration_fidelity(img, restore_volume(model, img, b, device), b)
            for img, b in zip(images, brains)]
    return {k: float(np.mean([r[k] for r in rows])) for k in ("ssim", "mae", "psnr_db")}


def calibrate(model: LoadedModel, images, brains, device: torch.device = torch.device("cpu")) -> tuple[dict, list[float], dict]:
    """(FPR thresholds, healthy case scores, the card's calibration figures) on calibration scans."""
    scores = [anomaly.score_map(img, restore_volume(model, img, b, device), b, model.card.postprocess)
              for img, b in zip(images, brains)]
    thresholds = anomaly.calibrate_fpr(scores, brains)
    case_scores = [anomaly.case_score(s, b) for s, b in zip(scores, brains)]
    figures = {"n_scans": len(images), "mean_voxel_fpr_at_fpr5": anomaly.mean_fpr(thresholds["fpr5"], scores, brains)}
    unreachable = [name for name, value in thresholds.items() if value == 0.0]
    if unreachable:
        figures["note"] = (f"{', '.join(unreachable)}: only {100 * anomaly.mean_fpr(0.0, scores, brains):.1f} % of "
                           "healthy brain voxels score above 0, so these thresholds flag every nonzero score")
    return thresholds, case_scores, figures


def _prepared_cohorts(card: ModelCard, data_dir: Path, cache_dir: Path, log: Log, **cohorts: list[str]):
    """[(images, brains)] in model space for each named list of subjects, all checked present first."""
    scans = data.list_scans(data_dir)
    missing = [s for ids in cohorts.values() for s in ids if s not in scans]
    if missing:
        raise FileNotFoundError(f"{len(missing)} subjects of {card.id}'s split are not in {data_dir}: {missing[:3]}")
    out = []
    for what, ids in cohorts.items():
        log(f"preparing {len(ids)} {what} scans (cached in {cache_dir})")
        out.append(data.load_cohort([scans[s] for s in ids], cache_dir, card.grid, card.percentiles))
    return out


def recalibrate(model_id: str, data_dir: Path, cache_dir: Path | None = None, command: str = "",
                log: Log = print, device: str = "auto") -> ModelCard:
    """Calibrate a trained model again on its card's calibration subjects, weights untouched (after a
    change to preprocessing or to calibration). Evaluation figures measured at the old thresholds are
    dropped from the card: run `normativead evaluate --record` again."""
    model = load_model(model_id)
    card = model.card
    if card.folder is None:
        raise ModelError(f"model {model_id}: no folder to write its card to.")
    [(images, brains)] = _prepared_cohorts(card, data_dir, cache_dir or home() / "prepared", log,
                                           calibration=data.card_subjects(card).calibration)
    log("calibrating thresholds on calibration subjects")
    thresholds, case_scores, calibration = calibrate(model, images, brains, select_device(device).device)
    figures = dict(card.figures, calibration={**calibration, "command": command})
    if thresholds != card.thresholds and figures.pop("evaluation", None) is not None:
        log("thresholds changed: the card's evaluation figures are dropped; run normativead evaluate --record again")
    card = card.replace(thresholds=thresholds, healthy_case_scores=tuple(case_scores), figures=figures)
    write_card(card, card.folder)
    log(f"{card.id}: " + ", ".join(f"{k} {v:.4g}" for k, v in thresholds.items()))
    return card


def train(config: dict, data_dir: Path, out_dir: Path, split_path: Path | None = None,
          epochs: int | None = None, cache_dir: Path | None = None, overwrite: bool = False,
          resume: bool = False, command: str = "", log: Log = print, device: str = "auto") -> ModelCard:
    """Train on device (auto: cuda, mps, else cpu), calibrate and write a model folder (card.json + weights)."""
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it")
    settings = TrainSettings(**{**config.get("training", {}), **({"epochs": epochs} if epochs else {})})
    card = card_from_config(config)
    if not getattr(_family(card), "has_weights", True):
        return _write_rule_model(card, out_dir, command, log)
    if data_dir is None:
        raise InputError("--data is required: the folder of healthy scans to train on.")
    choice = select_device(device)
    log(f"training on {choice.note}")
    split = data.load_split(split_path or default_split_path())
    cache_dir = cache_dir or home() / "prepared"
    cohorts = _prepared_cohorts(card, data_dir, cache_dir, log, training=split.train,
                                validation=split.validation, calibration=split.calibration)
    (train_images, train_brains), (val_images, val_brains), (cal_images, cal_brains) = cohorts
    train_slices = brain_slices(train_images, train_brains, settings.min_brain_voxels, settings.slice_step)
    val_slices = brain_slices(val_images, val_brains, settings.min_brain_voxels, settings.slice_step)
    log(f"{len(train_slices)} training slices, {len(val_slices)} validation slices")

    network = build_network(card)
    checkpoint = cache_dir / "checkpoints" / f"{card.id}.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        checkpoint.unlink(missing_ok=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{card.id}-", dir=out_dir.parent))
    try:
        card = _fit_and_calibrate(card, network, split, settings, checkpoint, work, log, command, choice.device,
                                  (train_slices, val_slices), (val_images, val_brains), (cal_images, cal_brains))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checkpoint.unlink(missing_ok=True)
    log(f"model {card.id} written to {out_dir}")
    return card.replace(folder=out_dir)


def _fit_and_calibrate(card, network, split, settings, checkpoint, work, log, command, device, slices,
                       validation, calibration):
    (train_slices, val_slices), (val_images, val_brains), (cal_images, cal_brains) = slices, validation, calibration
    state = fit(_family(card), network, train_slices, val_slices, settings, checkpoint, log, device)
    # every epoch's time, those of an interrupted run before --resume included
    train_seconds = sum(h.get("seconds", 0.0) for h in state["history"])
    save_file({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}, str(work / WEIGHTS_FILE))
    model = LoadedModel(card, network.eval())
    log("healthy restoration figures on validation subjects")
    figures = healthy_figures(model, val_images, val_brains, device)
    log("calibrating thresholds on calibration subjects")
    thresholds, case_scores, calibration = calibrate(model, cal_images, cal_brains, device)
    card = card.replace(
        thresholds=thresholds, healthy_case_scores=tuple(case_scores),
        training={
            "data": "IXI T1 (healthy adults, Hammersmith Philips 3T), 2 mm NiChart copies",
            "licence": "CC BY-SA 3.0 (brain-development.org/ixi-dataset)",
            "split": {k: len(v) for k, v in split.to_dict().items()},
            "subjects": split.to_dict(),  # so a report never restores a scan the model has seen
            "settings": settings.__dict__,
            "epochs_run": state["epoch"], "best_val_loss": state["best_loss"],
            "history": state["history"],
            "seconds": round(train_seconds), "device": device.type,
            "command": command,
            "torch": torch.__version__,
        },
        figures={
            "healthy_validation": {**figures, "n_scans": len(val_images),
                                   "where": "model space (MNI 2 mm), inside the brain, intensities in [0, 1]"},
            "calibration": calibration,
        },
        weights={"file": WEIGHTS_FILE, "sha256": sha256(work / WEIGHTS_FILE)},
    )
    write_card(card, work)
    return card


def _write_rule_model(card: ModelCard, out_dir: Path, command: str, log: Log) -> ModelCard:
    """A model without weights (the intensity baseline): its card alone, thresholds as its config states."""
    card = card.replace(training={
        "data": "none: each case is scored against its own brain (no training data)",
        "licence": "not applicable", "command": command, "seconds": 0})
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{card.id}-", dir=out_dir.parent))
    try:
        write_card(card, work)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"model {card.id} (no weights: {card.family}) written to {out_dir}")
    return card.replace(folder=out_dir)


def _family(card: ModelCard):
    from .models import FAMILIES

    return FAMILIES[card.family]
