"""SADM: a supervised anomaly segmenter on a frozen restorer, trained on synthetic anomalies.

No detection figures are asserted: the shipped CPU model's Dice and AUPRC are recorded in its card
and docs/evaluation, measured, not tested (a small model reaches a fixed figure only by luck).
"""

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from NormativeADLib.core import catalogue
from NormativeADLib.pipeline import analysis
from NormativeADLib.pipeline.restore import restore_volume, score_volume
from NormativeADLib.models import registry
from NormativeADLib.synthesis import synth_contrast
from NormativeADLib.training import train
from NormativeADLib.core.card import verify_weights
from NormativeADLib.core.locations import resources_dir
from NormativeADLib.core.errors import ModelError
from NormativeADLib.models import FAMILIES
from NormativeADLib.models.sadm import NO_RESTORER, Z_CLIP, load_restorer, network_inputs, robust_zscore
from NormativeADLib.models import synthetic_batches
from NormativeADLib.models.synthetic_batches import (IMAGE, LABELS, SYNTH_CONTRASTS, anomaly_kinds, scaled_as_scanned,
                                                     synthetic_contrasts)
from NormativeADLib.synthesis.synth_contrast import GM, WM
from NormativeADLib.io.template import template_on_grid

SADM = FAMILIES["sadm"]
SHIPPED_SADM = [c.id for c in catalogue.list_models() if c.family == "sadm"]
SMALL = {"restorer": "ae-ixi-t1", "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}


def sadm_net(network: dict = SMALL):
    return SADM.build(network, registry.load_model)


def template_slices(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """n axial slices of the MNI152 T1 template on the model grid (real anatomy), scaled like a scan."""
    t1, mask = template_on_grid(catalogue.get_card("ae-ixi-t1").grid)
    image = sitk.GetArrayFromImage(t1)[30:30 + 2 * n:2].astype(np.float32)
    brain = sitk.GetArrayFromImage(mask)[30:30 + 2 * n:2] > 0
    return (np.clip(image / np.percentile(image[brain], 99), 0, 1) * brain).astype(np.float32), brain


def slices_of(image: np.ndarray, brain: np.ndarray, labels: bool = False) -> torch.Tensor:
    """Training slices (N, 3, H, W) as train.stacked_slices makes them from SADM.training_volumes."""
    volumes = SADM.training_volumes([image], [brain], {"contrast_prob": 1.0 if labels else 0.0})
    return train.stacked_slices(volumes, [brain], min_voxels=500)


def test_network_holds_only_the_unet_and_keeps_the_restorer_frozen():
    net = sadm_net()
    assert all(not k.startswith("restorer") for k in net.state_dict())  # weights file: the U-Net only
    net.train()
    assert net.unet.training and not net.restorer.training  # the restorer's batch norm never moves
    assert not any(p.requires_grad for p in net.restorer.parameters())
    assert sadm_net({**SMALL, "restorer": "none"}).unet[0].model[0].conv.unit0.conv.in_channels == 1


def test_inputs_are_named_and_checked():
    assert network_inputs(SMALL) == ("scan", "restoration", "residual")  # the first models' channels
    assert network_inputs({**SMALL, "restorer": "none"}) == ("scan",)
    net = sadm_net({**SMALL, "restorer": "none", "inputs": ["scan", "zscore"]})
    assert net.unet[0].model[0].conv.unit0.conv.in_channels == 2
    with pytest.raises(ModelError, match="without a restorer"):
        network_inputs({**SMALL, "restorer": "none", "inputs": ["scan", "residual"]})
    with pytest.raises(ModelError, match="must be one of"):
        network_inputs({**SMALL, "inputs": ["scan", "gradient"]})


def test_a_segmenter_started_from_one_with_fewer_inputs_computes_what_it_computed():
    """train --init-from a segmenter that reads fewer inputs: the added inputs start at zero weight, so the
    widened network's logits are the source's whatever the new channels hold, and those weights learn."""
    from monai.networks.nets import UNet

    from NormativeADLib.core.errors import InputError

    def segmenter(inputs: int, features: int = 16) -> torch.nn.Module:
        unet = UNet(spatial_dims=2, in_channels=inputs, out_channels=features, channels=(features, 32, 64),
                    strides=(2, 2), num_res_units=1, norm="batch")
        return torch.nn.Sequential(unet, torch.nn.Conv2d(features, 1, kernel_size=1))

    torch.manual_seed(0)
    source, target = segmenter(2), segmenter(4)
    source.train()
    source(torch.rand(4, 2, 32, 32))  # running statistics away from their start, as in a trained model
    narrow, wide = ("scan", "zscore"), ("scan", "restoration", "residual", "zscore")
    target.load_state_dict(train.widen_inputs(source.state_dict(), target.state_dict(), narrow, wide))
    source.eval(), target.eval()
    x = torch.rand(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(target(x), source(x[:, [0, 3]]), atol=1e-5)
    target.train()
    target(x).sum().backward()
    first = [p for p in target.parameters() if p.ndim == 4 and p.shape[1] == 4]
    assert first and all(p.grad[:, 1:3].abs().sum() > 0 for p in first)
    with pytest.raises(InputError, match="differ in more than their inputs"):
        train.widen_inputs(source.state_dict(), segmenter(4, features=8).state_dict(), narrow, wide)
    with pytest.raises(InputError, match="another order"):  # same shapes: would load onto the wrong channels
        train.widen_inputs(source.state_dict(), source.state_dict(), narrow, narrow[::-1])


def test_a_2_5d_segmenter_reads_the_neighbouring_slices_as_it_was_trained():
    """network.context 1: the scan and z-score of the slices either side come in as channels. Started from a
    shipped 2D segmenter (their weights at zero, as train --init-from does) it scores a volume exactly as that
    segmenter does, so every input reaches the U-Net in the channel the 2D weights expect; and the neighbours
    change the score once they weigh."""
    from NormativeADLib.models.sadm import channel_names, context

    source = registry.load_model("sadm-dae")
    assert context(source.card.network) == 0  # a 2D segmenter, widened here
    network = {**source.card.network, "context": 1}
    assert channel_names(network) == ("scan-1", "scan", "scan+1", "restoration", "residual",
                                      "zscore-1", "zscore", "zscore+1")
    assert SADM.input_channels(network) == channel_names(network) and SADM.slice_context(network) == 1
    assert FAMILIES["study"].slice_context(network) == 0  # the study family reads one slice of each contrast
    wide = SADM.build(network, registry.load_model)
    wide.load_state_dict(train.widen_inputs(source.network.state_dict(), wide.state_dict(),
                                            channel_names(source.card.network), channel_names(network)))
    widened = registry.LoadedModel(source.card.replace(network=network), wide.eval())
    t1, mask = template_on_grid(source.card.grid)
    brain = sitk.GetArrayFromImage(mask) > 0
    image = (np.clip(sitk.GetArrayFromImage(t1) / np.percentile(sitk.GetArrayFromImage(t1)[brain], 99), 0, 1)
             * brain).astype(np.float32)
    cpu = torch.device("cpu")
    restored = restore_volume(source, image, brain, cpu)
    assert np.allclose(score_volume(widened, image, restored, brain, cpu),
                       score_volume(source, image, restored, brain, cpu), atol=1e-5)
    with torch.no_grad():
        first = next(p for p in wide.parameters() if p.ndim == 4 and p.shape[1] == 8)
        first[:, [0, 2]] += 0.5  # the neighbouring scans now weigh
    assert not np.allclose(score_volume(widened, image, restored, brain, cpu),
                           score_volume(source, image, restored, brain, cpu), atol=1e-3)
    with pytest.raises(ModelError, match="context"):
        channel_names({**network, "context": 9})


def test_2_5d_training_batches_draw_anomalies_in_3d_slabs():
    """With a context of 1 a training slice comes with its neighbours, redrawn and given anomalies as one 3D
    slab: the brains and scans of the three slices, and the middle slice's mask as the target."""
    image, brain = template_slices()
    options = {"anomaly_prob": 1.0, "contrast_prob": 1.0, "context": 1}
    volumes = SADM.training_volumes([image], [brain], options)
    assert volumes[0].shape == (9, *image.shape)
    assert np.array_equal(volumes[0][0, 1:], image[:-1]) and np.array_equal(volumes[0][2, :-1], image[1:])
    slices = train.stacked_slices(volumes, [brain], min_voxels=500)
    x, b, target = SADM.training_batch(slices, np.random.default_rng(0), options)
    assert x.shape == b.shape == (len(slices), 3, 96, 96) and target.shape == (len(slices), 1, 96, 96)
    assert target.sum() > 0 and not (target.bool() & ~b[:, 1:2].bool()).any()
    plain = {"anomaly_prob": 1.0, "context": 1}  # not redrawn: what changed is the anomalies
    plain_slices = train.stacked_slices(SADM.training_volumes([image], [brain], plain), [brain], min_voxels=500)
    x, _, target = SADM.training_batch(plain_slices, np.random.default_rng(0), plain)
    changed = (x - plain_slices[:, :3]).abs() > 0
    assert changed[:, 1:2][target.bool()].float().mean() > 0.5
    assert changed[:, [0, 2]].sum() > 0.5 * changed[:, 1].sum()  # the anomalies reach the neighbours: drawn in 3D


def test_training_slices_can_be_scaled_as_scans_carrying_their_anomalies():
    """`renormalise` (synthetic_batches.scaled_as_scanned): anomalies planted unclipped, and the slice scaled so
    that its brain percentiles lie where the healthy slice's did, as a scan is scaled with its lesion in it, its
    healthy twin (a restorer's target) by the same map. A healthy slice is unchanged; one whose bright lesion
    takes the top percentile comes out with its healthy tissue darker; draw() with the option gives slices in
    [0, 1] whose clean and anomalous versions differ only inside the anomalies, with the same masks."""
    image, brain = template_slices(4)
    healthy, inside = image[2], brain[2].astype(bool)
    same, _ = scaled_as_scanned(healthy, healthy, inside, (1.0, 99.0))
    assert np.abs(same - np.where(inside, healthy, 0))[inside].max() < 1e-6
    lesion = inside & (ndimage.distance_transform_edt(inside) > 8)
    lesion &= np.arange(96)[None, :] < 48  # a large lesion: a fifth of the brain or more
    scaled, twin = scaled_as_scanned(healthy + 0.6 * lesion, healthy, inside, (1.0, 99.0))
    assert scaled.max() <= 1.0 and np.median(scaled[inside & ~lesion]) < np.median(healthy[inside & ~lesion]) - 0.05
    np.testing.assert_array_equal(scaled[~lesion], twin[~lesion])
    options = {"anomaly_prob": 1.0, "contrast_prob": 1.0, "max_anomalies": 3}
    slices = train.stacked_slices(SADM.training_volumes([image], [brain], options), [brain], min_voxels=500)
    drawn = synthetic_batches.draw(slices, np.random.default_rng(0), {**options, "renormalise": True})
    assert float(drawn.anomalous.min()) >= 0.0 and float(drawn.anomalous.max()) <= 1.0
    outside = drawn.mask == 0
    assert torch.equal(drawn.clean[outside], drawn.anomalous[outside])
    plain = synthetic_batches.draw(slices, np.random.default_rng(0), options)
    assert torch.equal(plain.mask, drawn.mask)


def test_a_config_without_the_new_draws_reproduces_the_shipped_models_draws():
    """The shipped models' recorded commands must draw what they drew: a config without `from_intensities` or
    `renormalise` takes exactly the random numbers it took before those options existed. The figures were
    computed by the code before them (commit 8220145) on the same template slices."""
    image, brain = template_slices()
    labels = synth_contrast.tissue_labels(image, brain)
    sums = [float(synth_contrast.synthesise(labels, np.random.default_rng(3), c).astype(np.float64).sum())
            for c in ("T1C", "T2", "FLAIR", None)]
    np.testing.assert_allclose(sums, [23294.88308466574, 9277.595345052903, 26588.17017891887, 17634.51384519333],
                               rtol=1e-6)
    options = {"anomaly_prob": 1.0, "contrast_prob": 1.0, "max_anomalies": 3}
    slices = train.stacked_slices(SADM.training_volumes([image], [brain], options), [brain], min_voxels=500)
    drawn = synthetic_batches.draw(slices, np.random.default_rng(0), options)
    assert float(drawn.mask.sum()) == 1254.0
    np.testing.assert_allclose([float(drawn.anomalous.double().sum()), float(drawn.clean.double().sum())],
                               [18280.640800804846, 18191.750280219843], rtol=1e-6)


def test_a_config_states_the_pure_tissue_band_it_draws_with():
    """`synthetic.pure_tissue` reaches from_intensities in a training draw; a config drawing from intensities
    without it draws version 7's 15-85 (UNSTATED_BAND), what such configs drew before the band could be stated,
    and a band that is no band fails before training."""
    image, brain = template_slices()
    options = {"anomaly_prob": 0.0, "contrast_prob": 1.0, "from_intensities": 1.0, "contrasts": ["FLAIR"]}
    slices = train.stacked_slices(SADM.training_volumes([image], [brain], options), [brain], min_voxels=500)
    drawn = {band: synthetic_batches.draw(slices, np.random.default_rng(0),
                                          {**options, **({"pure_tissue": list(band)} if band else {})}).anomalous
             for band in (None, synth_contrast.PURE_TISSUE, (15.0, 85.0))}
    assert torch.equal(drawn[None], drawn[(15.0, 85.0)])
    assert not torch.allclose(drawn[None], drawn[synth_contrast.PURE_TISSUE])
    for bad in ([75, 25], [10, 120], 50, ["a", "b"]):
        with pytest.raises(ValueError, match="pure_tissue"):
            SADM.training_volumes([image], [brain], {**options, "pure_tissue": bad})
    # a shipped config drawing from intensities states its band
    configs = [json.loads(p.read_text()) for p in (resources_dir() / "Configs").glob("*.json")]
    drawing = [c for c in configs if c.get("synthetic", {}).get("from_intensities")]
    assert drawing and all(c["synthetic"].get("pure_tissue") == list(synth_contrast.PURE_TISSUE) for c in drawing)


def test_zscore_channel_is_robust_and_scale_free():
    """The z-score of a slice against its own brain: 0 at the brain's median, the same for a scan at
    another intensity scale or offset, clipped at +-Z_CLIP SDs, 0 outside the brain."""
    image, brain = template_slices(4)
    x, b = torch.from_numpy(image[:, None]), torch.from_numpy(brain[:, None].astype(np.float32))
    z = robust_zscore(x, b)
    assert torch.allclose(z, robust_zscore(0.5 * x + 0.2 * b, b), atol=0.01)  # scanner scale and offset do not matter
    assert float(z.abs().max()) <= 1 and not z[b == 0].any()
    for i in range(len(x)):
        inside = z[i][b[i] > 0]
        assert abs(float(inside.median())) < 0.02
    bright = x.clone()
    bright[0, 0, 48, 48] = 1.0
    assert float(robust_zscore(bright, b)[0, 0, 48, 48]) > 1.0 / Z_CLIP  # a bright voxel stands out


def test_restorer_is_pinned_by_its_hash():
    pinned = SADM.complete_network(SMALL, registry.load_model)
    assert pinned["restorer_sha256"] == catalogue.get_card("ae-ixi-t1").weights["sha256"]
    with pytest.raises(ModelError, match="not the one"):
        load_restorer({**pinned, "restorer_sha256": "0" * 64}, registry.load_model)
    with pytest.raises(ModelError, match="does not restore slices"):
        load_restorer({**SMALL, "restorer": "intensity-flair"}, registry.load_model)


def test_training_batches_carry_anomalies_and_contrasts():
    image, brain = template_slices()
    slices = slices_of(image, brain, labels=True)
    x, b, target = SADM.training_batch(slices, np.random.default_rng(0), {"anomaly_prob": 1.0, "contrast_prob": 1.0})
    assert x.shape == b.shape == target.shape == (len(slices), 1, 96, 96)
    assert target.sum((1, 2, 3)).min() > 0 and not (target.bool() & ~b.bool()).any()  # inside the brain
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert not torch.allclose(x[:, 0] * b[:, 0], slices[:, 0] * b[:, 0])  # redrawn in other contrasts
    again = SADM.training_batch(slices, np.random.default_rng(0), {"anomaly_prob": 1.0, "contrast_prob": 1.0})
    assert all(torch.equal(u, v) for u, v in zip((x, b, target), again))  # seeded
    _, _, healthy = SADM.training_batch(slices, np.random.default_rng(0), {"anomaly_prob": 0.0})
    assert healthy.sum() == 0
    _, _, several = SADM.training_batch(slices, np.random.default_rng(0), {"anomaly_prob": 1.0, "max_anomalies": 3})
    components = [ndimage.label(t[0].numpy())[1] for t in several]
    assert max(components) > 1  # several anomalies to a slice, as MS lesions come


def test_config_restricts_synthetic_contrasts_and_anomaly_kinds():
    assert synthetic_contrasts({}) == SYNTH_CONTRASTS
    assert synthetic_contrasts({"contrasts": ["flair", "T2", "random"]}) == ("FLAIR", "T2", None)
    with pytest.raises(ModelError, match="synthetic contrasts"):
        synthetic_contrasts({"contrasts": ["PD"]})
    with pytest.raises(ModelError, match="synthetic.kinds"):
        anomaly_kinds({"kinds": {"glow": 1.0}})
    image, brain = template_slices()
    slices = slices_of(image, brain, labels=True)
    # only FLAIR: grey matter brighter than white matter on every slice (T1 has it the other way round)
    x, _, _ = SADM.training_batch(slices, np.random.default_rng(0),
                                  {"anomaly_prob": 0.0, "contrast_prob": 1.0, "contrasts": ["FLAIR"]})
    labels = slices[:, LABELS].long()
    for image_slice, label_slice in zip(x[:, 0], labels):
        assert image_slice[label_slice == GM].mean() > image_slice[label_slice == WM].mean()
    # only hyper-intense blobs: every anomaly makes its slice brighter
    x, _, target = SADM.training_batch(slices, np.random.default_rng(0), {"anomaly_prob": 1.0, "kinds": {"bright_blob": 1}})
    inside = target[:, 0].bool()
    assert inside.any() and float((x[:, 0] - slices[:, IMAGE])[inside].min()) >= 0
    assert float((x[:, 0] - slices[:, IMAGE])[inside].mean()) > 0.05


def test_training_loss_falls_on_real_slices():
    """Adam steps on a fixed batch of template slices with synthetic anomalies lower Dice + BCE."""
    torch.manual_seed(0)
    image, brain = template_slices()
    batch = SADM.training_batch(slices_of(image, brain), np.random.default_rng(1), {"anomaly_prob": 0.8})
    net = sadm_net()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    net.train()
    for _ in range(12):
        loss = SADM.loss(net, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])


def test_fit_checkpoints_and_resumes_with_fixed_validation_batches(tmp_path):
    image, brain = template_slices()
    slices = slices_of(image, brain)
    settings = train.TrainSettings(epochs=1, batch_size=4)
    checkpoint = tmp_path / "sadm.pt"
    options = {"anomaly_prob": 0.7}
    state = train.fit(SADM, sadm_net(), slices[:6], slices[6:], settings, checkpoint, lambda m: None,
                      options=options)
    assert state["epoch"] == 1 and checkpoint.is_file()
    resumed = train.fit(SADM, sadm_net(), slices[:6], slices[6:], train.TrainSettings(epochs=2, batch_size=4),
                        checkpoint, lambda m: None, options=options)
    assert resumed["epoch"] == 2 and resumed["history"][0] == state["history"][0]


@pytest.mark.parametrize("model_id", SHIPPED_SADM)
def test_shipped_sadm_card(model_id):
    card = catalogue.get_card(model_id)
    verify_weights(card)
    if card.network["restorer"] != NO_RESTORER:  # the restorer it was trained on, pinned
        assert card.network["restorer_sha256"] == catalogue.get_card(card.network["restorer"]).weights["sha256"]
    assert card.training["command"].startswith("normativead train --family sadm")
    assert card.training["seconds"] > 0 and card.training["synthetic"]["anomaly_prob"] > 0
    assert len(card.training["subjects"]["train"]) == card.training["settings"]["train_subjects"]
    assert {"fpr1", "fpr5", "fpr10", "comp10"} <= set(card.thresholds)
    assert all(0 <= v <= 1 for v in card.thresholds.values())  # thresholds on a probability
    assert card.default_threshold in card.offered_thresholds()
    synthetic_options = card.training["synthetic"]
    if synthetic_options.get("contrast_prob", 0) > 0:  # trained on synthetic contrasts: its card says which
        drawn = {c.upper() for c in synthetic_contrasts(synthetic_options) if c}
        assert drawn and all(card.accepts(c) for c in drawn)
        if synthetic_options["contrast_prob"] >= 1:  # every slice redrawn: it claims no contrast it never saw
            assert {c.upper() for c in card.trained_contrasts} == drawn
    json.dumps(card.to_dict())


@pytest.mark.parametrize("model_id", SHIPPED_SADM)
def test_shipped_sadm_restores_the_sample_case(model_id, sample_scan, tmp_path):
    """End to end on the shipped sample: the heatmap is a probability, every output is written."""
    model = registry.load_model(model_id)
    result = analysis.analyse(sample_scan, model, device="cpu")
    heatmap = sitk.GetArrayFromImage(result.heatmap)
    assert 0 <= heatmap.min() and heatmap.max() <= 1 and heatmap.max() > 0
    assert 0 <= result.score.min() and result.score.max() <= 1
    assert result.restored.shape == result.prepared.image.shape
    written = analysis.write_outputs(result, tmp_path / "out")
    assert (tmp_path / "out" / "heatmap.nii.gz").is_file() and written


def test_healthy_scans_meet_a_model_not_trained_for_t1_in_its_own_contrasts():
    """Calibration of a FLAIR model on healthy T1 would measure it out of its contrasts: the scans are
    redrawn as synthetic FLAIR from their tissue labels (seeded); a T1 model gets them as they are."""
    image, brain = template_slices()
    card = catalogue.get_card("sadm-synth")
    same, note = train.in_model_contrast(card, [image], [brain], seed=0)
    assert note is None and same[0] is image
    flair = card.replace(contrast="FLAIR", contrasts=("FLAIR",))
    (redrawn,), note = train.in_model_contrast(flair, [image], [brain], seed=0)
    assert "synthetic FLAIR" in note
    labels = synth_contrast.labels_for_volume(image, brain, card.grid)
    assert image[labels == GM].mean() < image[labels == WM].mean()  # T1: white matter brighter
    assert redrawn[labels == GM].mean() > redrawn[labels == WM].mean()  # FLAIR: grey matter brighter
    assert not redrawn[~brain].any() and redrawn.max() <= 1
    np.testing.assert_array_equal(redrawn, train.in_model_contrast(flair, [image], [brain], seed=0)[0][0])


def test_mirror_averaging_makes_the_heatmap_of_a_symmetric_scan_symmetric():
    """postprocess.mirror averages the segmenter's probability with its probability of the left-right
    mirrored slices, mirrored back (restore.mirror_averaged): on a scan that is its own mirror image the
    heatmap becomes its own mirror image too, which a trained segmenter alone does not give."""
    image, brain = template_slices()
    image, brain = 0.5 * (image + image[..., ::-1]), brain | brain[..., ::-1]
    plain = registry.load_model("sadm-dae")
    card = plain.card.replace(postprocess=dataclasses.replace(plain.card.postprocess, mirror=True))
    mirrored = dataclasses.replace(plain, card=card)
    cpu = torch.device("cpu")
    restored = restore_volume(plain, image, brain, cpu)
    restored = 0.5 * (restored + restored[..., ::-1])  # the segmenter's whole input is its own mirror image
    alone = score_volume(plain, image, restored, brain, cpu, contrast="T1")
    averaged = score_volume(mirrored, image, restored, brain, cpu, contrast="T1")
    assert averaged.max() > 0
    np.testing.assert_allclose(averaged, averaged[..., ::-1], atol=1e-6)
    assert np.abs(alone - alone[..., ::-1]).max() > 1e-3
    assert 0 <= averaged.min() and averaged.max() <= 1
