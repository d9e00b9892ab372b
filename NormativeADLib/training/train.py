"""`normativead train`: fit a family on healthy scans, calibrate it, and write its card and weights.

Subjects are split into train / validation / calibration (Resources/Splits); the network sees
train subjects only, validation picks the best epoch and gives the healthy restoration figures,
calibration subjects give the thresholds. The card records the command that produced it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from monai.transforms import (Compose, RandAdjustContrast, RandBiasField, RandGaussianNoise,
                              RandGaussianSmooth)
from safetensors.torch import load_file, save_file

from ..measures import anomaly, metrics
from . import data, synthetic_validation
from ..core.card import ModelCard, PostProcess, sha256, verify_weights, write_card
from ..core.catalogue import get_card
from ..core.errors import InputError, ModelError
from ..core.options import (COMPONENTS, DEFAULT_POLICY, DEVICE, FPR_TARGETS, PROBABILITY_LEVELS,
                            SYNTHETIC_VALIDATION_VERSION)
from ..core.grid import ModelGrid
from ..core.locations import checked_name, child_path, home, prepared_cache, resources_dir
from ..core.writes import write_folder_atomic
from ..models.registry import LoadedModel, build_network, load_model
from ..pipeline.restore import restore_volume, score_volume, select_device

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
    train_subjects: int = 0  # the first n training subjects of the split only (0: all); for CPU budgets


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
    intensity = {"method": "percentile",
                 "percentiles": list(config.get("intensity", {}).get("percentiles", (1.0, 99.0)))}
    bias_field = config.get("intensity", {}).get("bias_field")
    if bias_field not in (None, "n4"):
        raise InputError(f"config {config['id']}: intensity.bias_field {bias_field!r} is not known; "
                         "leave it out or give \"n4\".")
    if bias_field:
        intensity["bias_field"] = bias_field
    return ModelCard(
        id=config["id"], family=config["family"], version=config["version"], contrast=config["contrast"],
        description=config["description"], grid=grid, network=config["network"],
        restoration=config.get("restoration", {}), intensity=intensity,
        postprocess=PostProcess(**config.get("postprocess", {})),
        thresholds=dict(config.get("thresholds", {})),
        default_threshold=config.get("default_threshold", DEFAULT_POLICY),
        contrasts=tuple(config.get("contrasts", ())),
    )


def default_split_path() -> Path:
    return resources_dir() / "Splits" / "ixi_t1.json"


def brain_slices(images: list[np.ndarray], brains: list[np.ndarray], min_voxels: int,
                 step: int = 1) -> torch.Tensor:
    """Every step-th axial slice (N, 1, H, W) holding at least min_voxels of brain."""
    return stacked_slices([img[None] for img in images], brains, min_voxels, step)


def stacked_slices(volumes: list[np.ndarray], brains: list[np.ndarray], min_voxels: int,
                   step: int = 1) -> torch.Tensor:
    """brain_slices of multi-channel volumes (c, z, y, x): (N, c, H, W), channels kept together."""
    keep = [v[:, ::step][:, b[::step].reshape(len(b[::step]), -1).sum(1) >= min_voxels]
            for v, b in zip(volumes, brains)]
    return torch.from_numpy(np.concatenate(keep, axis=1).transpose(1, 0, 2, 3).astype(np.float32))


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
        settings: TrainSettings, checkpoint: Path, log: Log, device: torch.device = torch.device("cpu"),
        options: dict | None = None) -> dict:
    """Train on device with Adam; keep the epoch with the lowest validation loss; resume from checkpoint.

    Slices stay in CPU memory and are augmented there; each batch moves to the device. A family that
    makes its own batches (SADM: synthetic anomalies and contrasts, family.training_batch with the
    config's `synthetic` options) gets them drawn from a numpy generator seeded per epoch, and its
    validation batches are drawn once with a fixed seed, so that validation losses compare across epochs.
    """
    options = options or {}
    make_batch = family.training_batch if family.makes_batches else None
    if make_batch is not None:
        fixed = np.random.default_rng(settings.seed + 10_000)
        validation = [make_batch(validation[i:i + settings.batch_size], fixed, options)
                      for i in range(0, len(validation), settings.batch_size)]
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
        scheduler.T_max = settings.epochs  # --resume --epochs N: the cosine schedule now ends at epoch N
        state = saved["state"]
        log(f"resumed from {checkpoint} at epoch {state['epoch']}")
    transform = augmenter(settings.augment_prob, settings.seed + state["epoch"])
    generator = torch.Generator().manual_seed(settings.seed + state["epoch"])
    rng = np.random.default_rng(settings.seed + state["epoch"])
    # noise is drawn on the device (a CPU generator cannot serve CUDA tensors); on the CPU, one generator
    noise = generator if device.type == "cpu" else torch.Generator(device=device).manual_seed(settings.seed + state["epoch"])
    for epoch in range(state["epoch"], settings.epochs):
        started = time.perf_counter()
        network.train()
        order = torch.randperm(len(train), generator=generator)
        losses = []
        for start in range(0, len(order), settings.batch_size):
            chosen = train[order[start:start + settings.batch_size]]
            batch = (_to(make_batch(chosen, rng, options), device) if make_batch
                     else augment_batch(chosen, transform).to(device))
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


def _to(batch, device: torch.device):
    """A batch (a tensor, or a family's tuple of tensors) on device."""
    return batch.to(device) if isinstance(batch, torch.Tensor) else tuple(t.to(device) for t in batch)


def validation_loss(family, network: torch.nn.Module, slices, batch_size: int,
                    device: torch.device = torch.device("cpu")) -> float:
    """Mean loss over validation slices, or over a family's prepared validation batches (a list)."""
    network.eval()
    if isinstance(slices, list):
        with torch.inference_mode():
            losses = [family.loss(network, _to(b, device), None).item() * len(b[0]) for b in slices]
        return float(sum(losses) / sum(len(b[0]) for b in slices))
    with torch.inference_mode():
        losses = [family.loss(network, slices[i:i + batch_size].to(device), None).item() * len(slices[i:i + batch_size])
                  for i in range(0, len(slices), batch_size)]
    return float(sum(losses) / len(slices))


def healthy_scores(model: LoadedModel, images, brains, device: torch.device = torch.device("cpu"),
                   fidelity: bool = False):
    """Score maps of healthy scans, and with fidelity their restoration figures (SSIM, PSNR, MAE inside
    the brain, mean over scans), computed only where they are reported (training's validation)."""
    scores, rows = [], []
    for img, b in zip(images, brains):
        restored = restore_volume(model, img, b, device)
        scores.append(score_volume(model, img, restored, b, device))
        if fidelity:
            rows.append(metrics.restoration_fidelity(img, restored, b))
    return scores, {k: float(np.mean([r[k] for r in rows])) for k in ("ssim", "mae", "psnr_db")} if rows else {}


HEALTHY_CONTRAST = "T1"  # the healthy scans the product trains and calibrates on (IXI) are T1


def in_model_contrast(card: ModelCard, images, brains, seed: int) -> tuple[list, str | None]:
    """Healthy model-space scans as the model meets them, and a note when they were changed: unchanged
    for a model trained for T1; for one trained for other contrasts only (FLAIR, T2), each scan redrawn
    from its own intensities through its tissue classes as a synthetic scan of one of them in turn (seeded),
    as the synthetic validation draws them: no healthy scan of those contrasts is here, and a T1 is out of
    such a model's contrasts."""
    if card.accepts(HEALTHY_CONTRAST):
        return list(images), None
    contrasts = card.trained_contrasts
    rng = np.random.default_rng(seed)
    redrawn = [synthetic_validation.in_contrast(img, b, contrasts[i % len(contrasts)], rng, card.grid)
               for i, (img, b) in enumerate(zip(images, brains))]
    return redrawn, (f"healthy IXI T1 scans redrawn from their own intensities as synthetic {' and '.join(contrasts)} "
                     "(no healthy scans of those contrasts here)")


@dataclass(frozen=True)
class Calibration:
    """What calibration on healthy scans gives a card."""

    thresholds: dict  # fpr1/5/10 (voxel FPR) and comp10 (component level)
    adaptive: dict  # the case-adaptive policy's healthy statistics (empty where they are degenerate)
    case_scores: list
    figures: dict


def calibrate(model: LoadedModel, images, brains, device: torch.device = torch.device("cpu")) -> Calibration:
    """Every threshold policy calibrated on healthy calibration scans (see options: fpr*, comp10, adaptive)."""
    scores, _ = healthy_scores(model, images, brains, device)
    post = model.card.postprocess
    thresholds = anomaly.calibrate_fpr(scores, brains)
    thresholds[COMPONENTS], components = anomaly.calibrate_components(scores, (model.card.grid.spacing_mm,) * 3,
                                                                      post.min_component_ml)
    if model.family.segments:
        thresholds.update(PROBABILITY_LEVELS)
    statistics = anomaly.score_statistics(scores, brains, post)
    adaptive = {"base": COMPONENTS, **statistics} if statistics else {}
    case_scores = [anomaly.case_score(s, b) for s, b in zip(scores, brains)]
    figures = {"n_scans": len(images), "mean_voxel_fpr_at_fpr5": anomaly.mean_fpr(thresholds["fpr5"], scores, brains),
               COMPONENTS: components}
    unreachable = [name for name, value in thresholds.items() if value == 0.0 and name in FPR_TARGETS]
    if unreachable:
        figures["note"] = (f"{', '.join(unreachable)}: only {100 * anomaly.mean_fpr(0.0, scores, brains):.1f} % of "
                           "healthy brain voxels score above 0, so these thresholds flag every nonzero score")
    if not adaptive:
        figures["note_adaptive"] = "no case-adaptive policy: the healthy scores' robust SD is 0"
    return Calibration(thresholds, adaptive, case_scores, figures)


def flagged_on_healthy(card: ModelCard, scores, brains) -> dict:
    """Flagged mL per healthy scan under each threshold policy (model space), and their median."""
    voxel_mm = (card.grid.spacing_mm,) * 3
    voxel_ml = card.grid.spacing_mm ** 3 / 1000.0
    per_scan = {}
    for score, brain in zip(scores, brains):
        for name, value in anomaly.case_thresholds(card, score, brain).items():
            mask = anomaly.segment(score, value, voxel_mm, card.postprocess.min_component_ml)
            per_scan.setdefault(name, []).append(round(float(mask.sum()) * voxel_ml, 2))
    return {name: {"median_ml": float(np.median(v)), "per_scan_ml": v} for name, v in per_scan.items()}


def _calibrated(card: ModelCard, calibration: Calibration, val_scores, val_brains,
                scans: str | None = None) -> ModelCard:
    """The card with a calibration's thresholds, and the flagged volume of validation scans under each;
    `scans` says how the healthy scans were changed for the model (in_model_contrast), in both figures."""
    card = card.replace(thresholds=calibration.thresholds, adaptive=calibration.adaptive,
                        healthy_case_scores=tuple(calibration.case_scores))
    noted = {"scans": scans} if scans else {}
    healthy = {**(card.figures.get("healthy_validation") or {}), **noted}
    if val_scores:
        healthy["flagged_ml"] = flagged_on_healthy(card, val_scores, val_brains)
    return card.replace(figures={**card.figures, "calibration": {**calibration.figures, **noted},
                                 "healthy_validation": healthy})


def _prepared_cohorts(card: ModelCard, data_dir: Path, cache_dir: Path, log: Log, **cohorts: list[str]):
    """[(images, brains)] in model space for each named list of subjects, all checked present first."""
    scans = _check_present(card, data_dir, *cohorts.values())
    out = []
    for what, ids in cohorts.items():
        log(f"preparing {len(ids)} {what} scans (cached in {cache_dir})")
        out.append(data.load_cohort([scans[s] for s in ids], cache_dir, card.grid, card.percentiles,
                                    bias_correction=card.bias_correction))
    return out


def _check_present(card: ModelCard, data_dir: Path, *cohorts) -> dict:
    """The folder's scans by subject, after checking it holds every subject of the cohorts."""
    scans = data.list_scans(data_dir)
    missing = [s for ids in cohorts for s in ids if s not in scans]
    if missing:
        raise FileNotFoundError(f"{len(missing)} subjects of {card.id}'s split are not in {data_dir}: {missing[:3]}")
    return scans


def model_subjects(card: ModelCard) -> data.Split:
    """The split a model is calibrated and validated on: its card's, or for a rule model (intensity), which
    never saw a scan, the shipped split."""
    return data.card_subjects(card) if card.weights else data.load_split(default_split_path())


def selection_scans(card: ModelCard, data_dir: Path, cache_dir: Path | None = None, log: Log = print):
    """(images, brains) of the healthy validation scans a default policy is chosen on, in model space
    (T1 as scanned; select_on_synthetic redraws the other contrasts)."""
    validation = model_subjects(card).validation[:SELECTION_SCANS]
    [scans] = _prepared_cohorts(card, data_dir, cache_dir or prepared_cache(), log, validation=validation)
    return scans


def recalibrate(model_id: str, data_dir: Path, cache_dir: Path | None = None, command: str = "",
                log: Log = print, device: str = DEVICE.default, site: str | None = None,
                select_only: bool = False) -> ModelCard:
    """Calibrate a trained model again, weights untouched, and return its card.

    Without site: on the card's own calibration subjects (after a change to preprocessing or to
    calibration), rewriting its card; evaluation figures measured at other thresholds are dropped
    (run `normativead evaluate --record` again). With site: on every healthy scan in data_dir (a
    site's own scanner), written as a new model `<id>@<site>` in the user's models (card and a copy
    of the weights); the original is left as it was.
    """
    if site is not None:  # a bad site id fails before the model is loaded
        checked_name(site, "site id (--as)")
    model = load_model(model_id)
    card = model.card
    if card.folder is None:
        raise ModelError(f"model {model_id}: no folder to write its card to.")
    if not card.weights and not select_only and site is None:  # stated by rule: calibrating would replace them
        raise InputError(f"model {model_id} has no weights: its thresholds are a rule ({', '.join(card.thresholds)}), "
                         "not calibrated on healthy scans. Use --select-only to choose its default policy again.")
    cache_dir = cache_dir or prepared_cache()
    choice = select_device(device).device
    if site is not None:
        return _site_copy(model, site, data_dir, cache_dir, command, log, choice)
    subjects = model_subjects(card)
    if select_only:  # the default policy chosen again on synthetic anomalies, thresholds as they are
        val_images_t1, val_brains = selection_scans(card, data_dir, cache_dir, log)
        # probability levels are fixed, not calibrated: a card made before one was offered gets it
        if model.family.segments:
            missing = {k: v for k, v in PROBABILITY_LEVELS.items() if k not in card.thresholds}
            model = LoadedModel(card.replace(thresholds={**card.thresholds, **missing}), model.network)
        card = select_on_synthetic(model, val_images_t1, val_brains, choice, log)
        write_card(card, card.folder)
        return card
    cohorts = _prepared_cohorts(card, data_dir, cache_dir, log, calibration=subjects.calibration,
                                validation=subjects.validation)
    (images, brains), (val_images_t1, val_brains) = cohorts
    images, note = in_model_contrast(card, images, brains, seed=0)
    val_images, _ = in_model_contrast(card, val_images_t1, val_brains, seed=1)
    log("calibrating thresholds on calibration subjects" + (f" ({note})" if note else ""))
    calibration = calibrate(model, images, brains, choice)
    log("flagged volume of the validation subjects under each threshold policy")
    val_scores, _ = healthy_scores(model, val_images, val_brains, choice)
    old = card
    card = _calibrated(card, replace(calibration, figures={**calibration.figures, "command": command}), val_scores,
                       val_brains, note)
    card = select_on_synthetic(LoadedModel(card, model.network), val_images_t1, val_brains, choice, log)
    if card.thresholds != old.thresholds and card.figures.pop("evaluation", None) is not None:
        log("thresholds changed: the card's evaluation figures are dropped; run normativead evaluate --record again")
    write_card(card, card.folder)
    log(f"{card.id}: " + ", ".join(f"{k} {v:.4g}" for k, v in card.thresholds.items()))
    return card


MIN_SITE_SCANS = 3


def _site_copy(model: LoadedModel, site: str, data_dir: Path, cache_dir: Path, command: str, log: Log,
               device: torch.device) -> ModelCard:
    """The model calibrated on a site's healthy scans, as a new model <id>@<site> beside the user's others."""
    scans = data.list_scans(data_dir)
    if len(scans) < MIN_SITE_SCANS:
        raise InputError(f"{data_dir} holds {len(scans)} scans; a site calibration needs at least {MIN_SITE_SCANS} "
                         "healthy scans of that scanner (25 or more make stable thresholds).")
    [(images, brains)] = _prepared_cohorts(model.card, data_dir, cache_dir, log, site=sorted(scans))
    log(f"calibrating {model.card.id} on {len(images)} scans of site {site}")
    calibration = calibrate(model, images, brains, device)
    site_id = f"{model.card.id}@{site}"
    figures = {k: v for k, v in model.card.figures.items() if k != "evaluation"}  # measured at other thresholds
    card = _calibrated(model.card.replace(id=site_id, figures=figures),
                       replace(calibration, figures={**calibration.figures, "command": command}), [], [])
    card = card.replace(training={**card.training, "site": {
        "id": site, "derived_from": model.card.id, "data": str(data_dir), "n_scans": len(images),
        "note": "thresholds and healthy case scores from this site's scans; weights as the original's"}})
    owner = home() / "models"
    target = child_path(owner, site_id, "site model id")

    def fill(work: Path) -> None:
        if model.card.weights:  # a rule model (intensity) has none
            shutil.copy2(model.card.weights_path, work / model.card.weights["file"])
        write_card(card, work)

    write_folder_atomic(target, fill, owner=owner)
    log(f"{site_id} written to {target}: " + ", ".join(f"{k} {v:.4g}" for k, v in card.thresholds.items()))
    return card.replace(folder=target)


def train(config: dict, data_dir: Path, out_dir: Path, split_path: Path | None = None,
          epochs: int | None = None, cache_dir: Path | None = None, overwrite: bool = False,
          resume: bool = False, command: str = "", log: Log = print, device: str = DEVICE.default,
          init_from: str | None = None) -> ModelCard:
    """Train on device (auto: cuda, mps, else cpu), calibrate and write a model folder (card.json + weights).
    init_from: an installed model of the same family and network (a segmenter's restorer may differ) whose
    weights training starts from (a longer or changed run that keeps what an earlier one learned); the card
    records it."""
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it")
    settings = TrainSettings(**{**config.get("training", {}), **({"epochs": epochs} if epochs else {})})
    card = card_from_config(config)
    if not _family(card).has_weights:
        return _write_rule_model(card, out_dir, command, log)
    if data_dir is None:
        raise InputError("--data is required: the folder of healthy scans to train on.")
    choice = select_device(device)
    log(f"training on {choice.note}")
    split = data.load_split(split_path or default_split_path())
    if settings.train_subjects:
        split = replace(split, train=split.train[:settings.train_subjects])
    family = _family(card)
    card = card.replace(network=family.complete_network(card.network, load_model))  # SADM pins its restorer
    network = build_network(card)
    lineage = _start_from(init_from, card, network, log) if init_from else None  # refused before any preparing
    options = config.get("synthetic", {})
    batch_options = _batch_options(card, options)
    cache_dir = cache_dir or prepared_cache()
    _check_present(card, data_dir, split.calibration)  # fail now, not after training
    cohorts = _prepared_cohorts(card, data_dir, cache_dir, log, training=split.train, validation=split.validation)
    (train_images, train_brains), (val_images, val_brains) = cohorts
    # calibration scans are prepared after training: registration can overlap with it elsewhere
    calibration_cohort = lambda: _prepared_cohorts(card, data_dir, cache_dir, log, calibration=split.calibration)[0]  # noqa: E731
    if family.makes_batches:  # slices carry the channels the family's batches need
        log("stacking the channels of the training slices")
        train_slices, val_slices = (
            stacked_slices(family.training_volumes(i, b, batch_options), b, settings.min_brain_voxels, settings.slice_step)
            for i, b in ((train_images, train_brains), (val_images, val_brains)))
    else:
        train_slices = brain_slices(train_images, train_brains, settings.min_brain_voxels, settings.slice_step)
        val_slices = brain_slices(val_images, val_brains, settings.min_brain_voxels, settings.slice_step)
    log(f"{len(train_slices)} training slices, {len(val_slices)} validation slices")

    checkpoint = cache_dir / "checkpoints" / f"{card.id}.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        checkpoint.unlink(missing_ok=True)
    run = TrainingRun(card, network, split, settings, checkpoint, log, command, choice.device,
                      train_slices, val_slices, val_images, val_brains, calibration_cohort, options, lineage)
    card = write_folder_atomic(out_dir, lambda work: _fit_and_calibrate(run, work))
    checkpoint.unlink(missing_ok=True)
    log(f"model {card.id} written to {out_dir}")
    return card.replace(folder=out_dir)


# What a warm start may change in the network settings: the restorer a segmenter reads (pinned anew at
# training) and the input channels it adds to those of the model it starts from (inputs, neighbouring slices).
_WIDENABLE = {"restorer", "restorer_version", "restorer_sha256", "restorer_family", "inputs", "context"}


def _batch_options(card: ModelCard, options: dict) -> dict:
    """The config's synthetic settings, the neighbouring slices a training slice brings (a 2.5D segmenter's
    network.context) and the card's intensity percentiles (a slice scaled with its anomalies, `renormalise`),
    for the family's training_volumes and training_batch."""
    return {**options, "context": _family(card).slice_context(card.network),  # the network's, whatever the config says
            "percentiles": card.percentiles}


def _start_from(model_id: str, card: ModelCard, network: torch.nn.Module, log: Log) -> dict:
    """Load an installed model's weights into the network about to be trained; what the card records.

    A segmenter may start from one that reads fewer inputs (a SADM model with a restorer from one that
    reads the scan alone): the added inputs' weights start at zero, so training starts from exactly what
    the source computes and the restoration channels add to it rather than replace it."""
    # the source's own weights, checked against its card; not the source built whole: a SADM source would load
    # its pinned restorer, which the config's restorer (trained again) may have replaced
    source = get_card(model_id)
    source_inputs, target_inputs = (_family(c).input_channels(c.network) for c in (source, card))
    kept = lambda n: {k: v for k, v in n.items() if k not in _WIDENABLE}  # noqa: E731
    # the restorer may differ (trained again, or another one restoring the same slices): the segmenter's weights
    # fit any restoration of the slice, and training adapts them to the new one, as to a restorer trained again
    if (source.family != card.family or kept(source.network) != kept(card.network)
            or not set(source_inputs) <= set(target_inputs)):
        raise InputError(f"--init-from {model_id}: its family and network ({source.family}, "
                         f"{source.network}) differ from the config's ({card.family}, {card.network}); "
                         "start from a model trained with the same network settings (or, for a segmenter, the "
                         "same settings reading fewer inputs).")
    state = load_file(str(verify_weights(source)))
    if source_inputs != target_inputs:
        state = widen_inputs(state, network.state_dict(), source_inputs, target_inputs)
        log(f"the inputs {', '.join(n for n in target_inputs if n not in source_inputs)} start at zero weight")
    network.load_state_dict(state)
    log(f"starting from the weights of {source.id}")
    earlier = source.training or {}
    lineage = {"id": source.id, "version": source.version, "sha256": source.weights.get("sha256"),
               "epochs_run": earlier.get("epochs_run"), "command": earlier.get("command"),
               "seconds": earlier.get("seconds")}
    if source.network.get("restorer") != card.network.get("restorer"):
        lineage["restorer"] = source.network.get("restorer")  # it was trained over another restorer
    return lineage if source_inputs == target_inputs else {**lineage, "inputs": list(source_inputs)}


def widen_inputs(source: dict, target: dict, source_inputs: tuple, target_inputs: tuple) -> dict:
    """source's state dict for a network reading target_inputs: every tensor that takes the input channels
    (dimension 1, a first convolution and its residual path) gets zero weights for the added inputs."""
    if [name for name in target_inputs if name in source_inputs] != list(source_inputs):
        raise InputError(f"cannot widen inputs {list(source_inputs)} to {list(target_inputs)}: the inputs they share "
                         "come in another order, and weights of the same shape would load onto the wrong channels.")
    index = [target_inputs.index(name) for name in source_inputs]
    widened = {}
    for key, value in source.items():
        shape = target[key].shape
        if value.shape != shape:
            if (value.ndim < 2 or value.shape[1] != len(source_inputs) or shape[1] != len(target_inputs)
                    or value.shape[:1] + value.shape[2:] != shape[:1] + shape[2:]):
                raise InputError(f"cannot widen {key} from {tuple(value.shape)} to {tuple(shape)}: the networks "
                                 "differ in more than their inputs.")
            wide = torch.zeros(shape, dtype=value.dtype)
            wide[:, index] = value
            value = wide
        widened[key] = value
    return widened


@dataclass(frozen=True)
class TrainingRun:
    """What one training run works with, gathered once by train() for the fit and the calibration."""

    card: ModelCard  # from the config, before training
    network: torch.nn.Module
    split: data.Split
    settings: TrainSettings
    checkpoint: Path  # resumable state of the fit
    log: Log
    command: str  # recorded in the card
    device: torch.device
    train_slices: object  # what fit() takes: slices, or stacked channels for families that need them
    val_slices: object
    val_images: object  # healthy validation scans as read (T1): figures and the default policy
    val_brains: object
    calibration: Callable[[], tuple]  # prepares the calibration scans: (images, brains)
    options: dict | None = None  # the config's synthetic-anomaly settings
    lineage: dict | None = None  # the model the weights started from (--init-from)


def _fit_and_calibrate(run: TrainingRun, work: Path) -> ModelCard:
    """Fit, write the weights into work, measure on validation, calibrate, choose the default policy."""
    card, network, settings, device, log = run.card, run.network, run.settings, run.device, run.log
    options, val_t1, val_brains = run.options, run.val_images, run.val_brains
    state = fit(_family(card), network, run.train_slices, run.val_slices, settings, run.checkpoint, log, device,
                _batch_options(card, options))
    # every epoch's time, those of an interrupted run before --resume included
    train_seconds = sum(h.get("seconds", 0.0) for h in state["history"])
    save_file({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}, str(work / WEIGHTS_FILE))
    model = LoadedModel(card, network.eval())
    log("healthy restoration figures on validation subjects")
    val_images, note = in_model_contrast(card, val_t1, val_brains, seed=1)
    val_scores, figures = healthy_scores(model, val_images, val_brains, device, fidelity=True)
    cal_images, cal_brains = run.calibration()
    cal_images, _ = in_model_contrast(card, cal_images, cal_brains, seed=0)
    log("calibrating thresholds on calibration subjects")
    calibration = calibrate(model, cal_images, cal_brains, device)
    card = card.replace(
        training={
            "data": run.split.data, "licence": run.split.licence,  # as the split file states them
            "split": {k: len(v) for k, v in run.split.to_dict().items()},
            "subjects": run.split.to_dict(),  # so a report never restores a scan the model has seen
            "settings": settings.__dict__,
            "epochs_run": state["epoch"], "best_val_loss": state["best_loss"],
            "history": state["history"],
            "seconds": round(train_seconds), "device": device.type,
            "command": run.command,
            "torch": torch.__version__,
            **({"synthetic": options} if options else {}),
            **({"initialised_from": run.lineage} if run.lineage else {}),
        },
        figures={
            "healthy_validation": {**figures, "n_scans": len(val_images),
                                   "where": "model space (MNI 2 mm), inside the brain, intensities in [0, 1]"},
        },
        weights={"file": WEIGHTS_FILE, "sha256": sha256(work / WEIGHTS_FILE)},
    )
    card = _calibrated(card, calibration, val_scores, val_brains, note)
    card = select_on_synthetic(LoadedModel(card, model.network), val_t1, val_brains, device, log)
    write_card(card, work)
    return card


# Healthy validation subjects the default policy is chosen on, each in every contrast: all 15 of the shipped
# split since SYNTHETIC_VALIDATION_VERSION 3 (5 before: one restorer's residual contrast on T1 moved from
# 1.61 to 1.40 between two draws of 15 anomalies, across the restorer checks' 1.5)
SELECTION_SCANS = 15


def select_on_synthetic(model: LoadedModel, images, brains, device: torch.device, log: Log) -> ModelCard:
    """The card with its restoration and detection figures on healthy validation scans carrying synthetic
    anomalies in each of its contrasts (synthetic_validation), and its default policy chosen on them:
    no lesion label of a real case chooses it."""
    card = model.card
    study = model.family.reads_study
    contrasts = synthetic_validation.STUDY_SETS if study else card.trained_contrasts
    log(f"synthetic-anomaly validation on {min(SELECTION_SCANS, len(images))} healthy scans in {', '.join(contrasts)}")
    figures = synthetic_validation.measure(model, images[:SELECTION_SCANS], brains[:SELECTION_SCANS], contrasts,
                                           device=device)
    policy, why, per_contrast, reasons = chosen_policies(card, figures, synthetic_validation.ceiling_policies(model),
                                                         per_contrast=not study)
    log(f"default policy: {why}")
    for contrast, reason in reasons.items():
        log(f"default policy on {contrast}: {reason}")
    return card.replace(default_threshold=policy or card.default_threshold, contrast_thresholds=per_contrast, figures={
        **card.figures, "synthetic_validation": {
            "version": SYNTHETIC_VALIDATION_VERSION,
            "scans": f"the first {min(SELECTION_SCANS, len(images))} healthy IXI validation subjects (model space), "
                     "T1 as scanned, other contrasts redrawn from their own intensities through their tissue classes; "
                     f"each once healthy and once with {synthetic_validation.ANOMALIES_PER_SCAN} synthetic 3D anomalies (seeded)"
                     + ("; per contrast set, a synthetic study of one anatomy with the same anomalies in each "
                        "contrast (synth_study.py)" if study else ""),
            "per_contrast": figures, "choice": why if policy else f"{why}; default kept",
            **({"choice_per_contrast": reasons} if reasons else {})}})


def chosen_policies(card: ModelCard, figures: dict, ceiling=frozenset(),
                    per_contrast: bool = True) -> tuple[str | None, str, dict, dict]:
    """(policy, why, {contrast: policy}, {contrast: why}) a card takes from its synthetic figures: the overall
    choice (None: the card keeps its default), and each contrast whose own choice differs from the default
    the card ends with (its own when no choice was made)."""
    policy, why = synthetic_validation.choose_policy(figures, exclude=ceiling,
                                                     must_choose=card.default_threshold in ceiling)
    own, reasons = _policies_per_contrast(figures, policy or card.default_threshold, ceiling) if per_contrast else ({}, {})
    return policy, why, own, reasons


def _policies_per_contrast(figures: dict, overall: str | None, ceiling=frozenset()) -> tuple[dict, dict]:
    """({contrast: policy}, {contrast: why}) for the contrasts whose own choice (the same rule on that
    contrast's figures alone, never a policy at the ceiling) differs from the choice over all of them, which a
    scan of unknown contrast takes."""
    if len(figures) < 2:
        return {}, {}
    chosen = {c: synthetic_validation.choose_policy({c: f}, exclude=ceiling) for c, f in figures.items()}
    differ = {c: (p, why) for c, (p, why) in chosen.items() if p is not None and p != overall}
    return {c: p for c, (p, _) in differ.items()}, {c: why for c, (_, why) in differ.items()}


def _write_rule_model(card: ModelCard, out_dir: Path, command: str, log: Log) -> ModelCard:
    """A model without weights (the intensity baseline): its card alone, thresholds as its config states."""
    card = card.replace(training={
        "data": "none: each case is scored against its own brain (no training data)",
        "licence": "not applicable", "command": command, "seconds": 0})
    write_folder_atomic(out_dir, lambda work: write_card(card, work))
    log(f"model {card.id} (no weights: {card.family}) written to {out_dir}")
    return card.replace(folder=out_dir)


def _family(card: ModelCard):
    from ..models import FAMILIES

    return FAMILIES[card.family]
