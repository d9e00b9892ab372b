"""Synthetic anomalies (synthetic.py) and synthetic contrasts (synth_contrast.py) on real scans in
model space: the shipped sample case (always), a healthy IXI scan of ../shared/data (when present)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from NormativeADLib.synthesis import synth_contrast as sc
from NormativeADLib.synthesis import synthetic

from testsupport import SHARED_DATA, needs_shared_data


@pytest.fixture(scope="module")
def volume(sample_scan):
    """(image, brain) of the sample case's T1 on the model grid."""
    from NormativeADLib import io
    from NormativeADLib.pipeline import preprocess
    from NormativeADLib.core.grid import ModelGrid

    prepared = preprocess.prepare(io.read_scan(sample_scan), ModelGrid())
    return prepared.image, prepared.brain


@pytest.fixture(scope="module")
def slices(volume):
    """Three axial slices of the sample case (low, middle, high) and another slice to take patches from."""
    image, brain = volume
    picked = [25, 40, 55]
    return [(image[z], brain[z]) for z in picked], (image[45], brain[45])


@pytest.fixture(scope="module")
def labels(volume):
    image, brain = volume
    return sc.labels_for_volume(image, brain)


def _draws(slices, kind, seeds=range(12)):
    cases, other = slices
    for seed in seeds:
        image, brain = cases[seed % len(cases)]
        out, mask = synthetic.generate(kind, image, brain, np.random.default_rng(seed), other)
        yield image, brain, out, mask


# --- anomalies -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_same_seed_same_anomaly_other_seed_another(slices, kind):
    cases, other = slices
    image, brain = cases[1]
    a = synthetic.generate(kind, image, brain, np.random.default_rng(7), other)
    b = synthetic.generate(kind, image, brain, np.random.default_rng(7), other)
    c = synthetic.generate(kind, image, brain, np.random.default_rng(8), other)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_mask_is_inside_the_brain_and_of_the_documented_size(slices, kind):
    for image, brain, out, mask in _draws(slices, kind):
        assert mask.dtype == bool and mask.shape == image.shape
        assert synthetic.MIN_VOXELS <= mask.sum() <= synthetic.max_voxels(2)
        assert not (mask & ~brain).any()


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_only_the_mask_changes_and_intensities_stay_in_range(slices, kind):
    changed_any = 0
    for image, brain, out, mask in _draws(slices, kind):
        assert out.dtype == np.float32 and out.shape == image.shape
        np.testing.assert_array_equal(out[~mask], image[~mask])  # background included: it stays 0
        assert out.min() >= 0.0 and out.max() <= 1.0
        changed_any += bool((np.abs(out - image)[mask] > 1e-4).any())
    assert changed_any >= 10  # nearly every draw is visible (a blur of a flat region may not be)


def test_bright_blobs_rise_and_dark_blobs_fall_within_the_documented_range(slices):
    largest = synthetic.SHIFT_RANGE[1] * (1 + synthetic.TEXTURE_AMPLITUDE) + 1e-5
    for kind, sign in (("bright_blob", 1.0), ("dark_blob", -1.0)):
        strong = 0
        for image, _, out, mask in _draws(slices, kind):
            change = sign * (out - image)[mask]
            assert change.min() >= 0.0 and change.max() <= largest
            strong += change.max() >= (1 - synthetic.TEXTURE_AMPLITUDE) * synthetic.SHIFT_RANGE[0]
        assert strong >= 10  # the core reaches the documented shift unless the image's range clips it


def test_tumours_are_glioma_sized_and_look_as_in_their_contrast(slices):
    """A tumour is larger than any other kind (they stop at 20 mm in radius), and its compartments change the
    scan as they look in its contrast: bright oedema on T2 and FLAIR, a bright enhancing part on T1c, darker
    everywhere on T1."""
    largest_blob = max(mask.sum() for *_, mask in _draws(slices, "bright_blob", range(30)))
    cases, other = slices
    sizes, changes = [], {}
    for contrast in ("T1", "T1c", "T2", "FLAIR"):
        for seed in range(12):
            image, brain = cases[seed % len(cases)]
            out, mask = synthetic.generate("tumour", image, brain, np.random.default_rng(seed), other, contrast)
            sizes.append(mask.sum())
            changes.setdefault(contrast, []).append((out - image)[mask])
    assert np.median(sizes) > largest_blob / 4 and max(sizes) > largest_blob
    rise = {c: np.mean([(d > 0.05).mean() for d in v]) for c, v in changes.items()}
    fall = {c: np.mean([(d < -0.05).mean() for d in v]) for c, v in changes.items()}
    assert rise["T2"] > 0.6 and fall["T2"] < 0.1 and rise["FLAIR"] > 0.5
    assert fall["T1"] > 0.5 and rise["T1"] < 0.1
    assert rise["T1c"] > 0.1 and fall["T1c"] > 0.2  # an enhancing part in dark oedema


def test_the_mix_of_the_models_trained_before_tumours_draws_no_tumour(slices):
    cases, other = slices
    image, brain = cases[1]
    rng = np.random.default_rng(0)
    for probabilities in (None, synthetic.BRIGHT_LESION_PROBABILITIES, synthetic.kind_weights({"bright_blob": 1})):
        assert "tumour" not in {synthetic.sample(image, brain, rng, other, probabilities)[2] for _ in range(60)}


def test_smoothing_removes_texture(slices):
    before, after = [], []
    for image, _, out, mask in _draws(slices, "smoothing"):
        before.append(np.abs(np.diff(image, axis=1))[mask[:, 1:]].mean())
        after.append(np.abs(np.diff(out, axis=1))[mask[:, 1:]].mean())
    assert np.mean(after) < 0.8 * np.mean(before)


def test_foreign_patch_brings_the_other_subjects_texture(slices):
    cases, (_, other_brain) = slices
    image, brain = cases[1]
    # a checkerboard donor: alpha blending brings its values, Poisson blending its gradients
    checker = (np.indices(image.shape).sum(0) % 2 * 0.6 + 0.2).astype(np.float32)
    donor = np.where(other_brain, checker, 0.0).astype(np.float32)
    for seed in range(6):
        out, mask = synthetic.generate("foreign_patch", image, brain, np.random.default_rng(seed), (donor, other_brain))
        assert np.abs(out - image)[mask].max() > 0.1


def test_anomalies_work_on_volumes(volume):
    image, brain = volume
    other = (image[:, :, ::-1].copy(), brain[:, :, ::-1].copy())  # the mirrored brain lends patches
    for i, kind in enumerate(synthetic.KINDS):
        out, mask = synthetic.generate(kind, image, brain, np.random.default_rng(i), other)
        assert synthetic.MIN_VOXELS <= mask.sum() <= synthetic.max_voxels(3)
        assert not (mask & ~brain).any()
        np.testing.assert_array_equal(out[~mask], image[~mask])


def test_sample_draws_kinds_with_the_documented_probabilities(slices):
    cases, other = slices
    image, brain = cases[1]
    rng = np.random.default_rng(0)
    kinds = [synthetic.sample(image, brain, rng, other)[2] for _ in range(500)]
    for kind, p in synthetic.PROBABILITIES.items():
        assert abs(kinds.count(kind) / len(kinds) - p) < 0.07, kind
    assert abs(sum(synthetic.PROBABILITIES.values()) - 1.0) < 1e-9


def test_kind_weights_restrict_and_reweight_the_draw(slices):
    cases, other = slices
    image, brain = cases[1]
    weights = synthetic.kind_weights({"bright_blob": 3, "smoothing": 1})
    assert weights["bright_blob"] == 0.75 and weights["dark_blob"] == 0.0
    rng = np.random.default_rng(0)
    kinds = [synthetic.sample(image, brain, rng, other, weights)[2] for _ in range(200)]
    assert set(kinds) == {"bright_blob", "smoothing"} and kinds.count("bright_blob") > 120
    assert synthetic.kind_weights(None) == synthetic.PROBABILITIES
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        synthetic.kind_weights({"glow": 1})
    with pytest.raises(ValueError, match="positive sum"):
        synthetic.kind_weights({"bright_blob": 0})


def test_t2_and_flair_draw_mostly_bright_lesions_as_the_bright_lesion_models_train_on():
    import json

    from testsupport import REPO

    for contrast in ("FLAIR", "flair", "T2"):
        assert synthetic.contrast_probabilities(contrast) == synthetic.with_tumours(synthetic.BRIGHT_LESION_PROBABILITIES)
    for contrast in ("T1", "T1c", None, "PD"):
        assert synthetic.contrast_probabilities(contrast) == synthetic.with_tumours(synthetic.PROBABILITIES)
    for contrast in ("T1", "T2", None):  # the validation plants tumours everywhere, the other kinds in their mix
        mix = synthetic.contrast_probabilities(contrast)
        assert mix["tumour"] == synthetic.TUMOUR_SHARE and abs(sum(mix.values()) - 1.0) < 1e-9
    bright = synthetic.BRIGHT_LESION_PROBABILITIES
    assert abs(sum(bright.values()) - 1.0) < 1e-9 and set(bright) == set(synthetic.KINDS)
    assert bright["bright_blob"] > synthetic.PROBABILITIES["bright_blob"]
    for config in ("sadm_synth_t2flair", "sadm_dae_t2flair"):  # the bright-lesion mix they were trained on
        options = json.loads((REPO / "Resources" / "Configs" / f"{config}.json").read_text())["synthetic"]
        assert synthetic.kind_weights(options["kinds"]) == pytest.approx(bright), config
    # the T1c segmenter learns the mix it is chosen on, tumours included
    options = json.loads((REPO / "Resources" / "Configs" / "sadm_dae_t1c.json").read_text())["synthetic"]
    assert synthetic.kind_weights(options["kinds"]) == pytest.approx(synthetic.contrast_probabilities("T1c"))


def test_a_slice_takes_milliseconds(slices):
    cases, other = slices
    image, brain = cases[1]
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(50):
        synthetic.sample(image, brain, rng, other)
    assert (time.perf_counter() - start) / 50 < 0.03  # measured about 1-2 ms; room for a busy machine


def test_too_small_a_brain_or_a_wrong_kind_is_refused():
    image = np.zeros((32, 32), np.float32)
    brain = np.zeros((32, 32), bool)
    brain[10:12, 10:12] = True
    with pytest.raises(ValueError, match="brain"):
        synthetic.generate("bright_blob", image, brain, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        synthetic.generate("glioma", image, brain, np.random.default_rng(0))
    with pytest.raises(ValueError, match="grid"):
        synthetic.generate("foreign_patch", np.ones((32, 32), np.float32), np.ones((32, 32), bool),
                           np.random.default_rng(0), (np.ones((16, 16), np.float32), np.ones((16, 16), bool)))


def test_perlin_noise_is_seeded_smooth_and_bounded():
    a = synthetic.perlin((40, 40), (4, 4), np.random.default_rng(1))
    b = synthetic.perlin((40, 40), (4, 4), np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() <= 1.0 + 1e-5 and a.std() > 0.05
    assert np.abs(np.diff(a, axis=0)).max() < 0.3  # smooth: ten pixels per lattice cell
    assert synthetic.perlin((8, 9, 10), (2, 2, 2), np.random.default_rng(1)).shape == (8, 9, 10)


def test_poisson_blend_keeps_the_host_outside_and_the_patch_shape_inside():
    host = np.full((20, 20), 0.5, np.float32)
    y, x = np.indices((20, 20))
    patch = (0.1 + 0.4 * np.exp(-((y - 10) ** 2 + (x - 10) ** 2) / 8.0)).astype(np.float32)  # a bump on 0.1
    inside = np.zeros((20, 20), bool)
    inside[4:17, 4:17] = True
    out = synthetic.poisson_blend(host, patch, inside)
    np.testing.assert_array_equal(out[~inside], host[~inside])
    # the bump shows, standing on the host's level (0.5), not on the patch's own (0.1)
    assert abs(out[10, 10] - 0.9) < 0.05 and abs(out[4, 4] - 0.5) < 0.05


# --- synthetic contrasts ---------------------------------------------------------------------------

def _class_means(image, labels, core=False):
    """Mean of each tissue class; core: inside each class eroded by a voxel, where partial volume with
    the neighbouring class (the cortex is a 1-2 voxel ribbon beside CSF) does not blur the tissue's signal."""
    return {t: float(image[ndimage.binary_erosion(labels == t) if core else labels == t].mean())
            for t in (sc.CSF, sc.GM, sc.WM)}


def test_tissue_classes_of_a_t1_are_ordered_csf_gm_wm(volume, labels):
    image, brain = volume
    assert sc.tissue_priors() is not None, "the MNI GM/WM maps ship with nilearn beside the template"
    assert (labels[~brain] == sc.BACKGROUND).all() and (labels[brain] > sc.BACKGROUND).all()
    shares = np.bincount(labels[brain], minlength=4)[1:] / brain.sum()
    assert shares.min() > 0.05, shares  # every tissue is there in earnest
    means = _class_means(image, labels)
    assert means[sc.CSF] < means[sc.GM] < means[sc.WM]


def test_tissue_priors_are_probabilities():
    priors = sc.tissue_priors()
    if priors is None:
        pytest.skip("the MNI152 GM/WM maps are not installed beside the template (nilearn)")
    assert priors.shape[0] == 4 and priors.min() >= 0.0
    assert np.abs(priors.sum(0) - 1.0).max() < 0.05


@pytest.mark.parametrize("contrast", sc.CONTRASTS)
def test_synthetic_contrasts_keep_the_documented_tissue_order(labels, contrast):
    slab = labels[25:55]  # the middle of the brain: a quarter of the time of the whole volume
    for seed in range(3):
        image = sc.synthesise(slab, np.random.default_rng(seed), contrast)
        means = _class_means(image, slab, core=True)
        order = sc.CONTRAST_ORDER[contrast]
        assert means[order[0]] < means[order[1]] < means[order[2]], (seed, means)


def test_synthetic_images_are_normalised_like_scans_and_seeded(labels):
    slab = labels[35:45]
    a = sc.synthesise(slab, np.random.default_rng(3))
    b = sc.synthesise(slab, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    brain = slab > 0
    assert a.dtype == np.float32 and (a[~brain] == 0).all() and a.min() >= 0.0 and a.max() <= 1.0
    lo, hi = np.percentile(a[brain], [1, 99])
    assert lo < 0.02 and hi > 0.98  # percentiles (1, 99) of the brain on 0 and 1, as preprocess scales


_PLAIN = sc.SynthSettings(class_std=(0.0, 0.0), blur_sigma=(0.0, 0.0), bias_max=0.0, noise_std=(0.0, 0.0),
                          thick_slices=(1,))  # no scanner effects: the mapping alone


@pytest.mark.parametrize("contrast", sc.CONTRASTS)
def test_contrasts_drawn_from_the_t1s_intensities_keep_its_partial_volume(volume, labels, contrast):
    """from_intensities maps the middle of each class's T1 intensities to the class's drawn mean: the class
    order is the contrast's, and a voxel between two classes in the T1 (a sulcus, the cortex's rim) stays between
    them, where hard labels give each class one value (SYNTHETIC_VALIDATION_VERSION 7)."""
    image, brain = volume
    z = slice(25, 55)
    t1, slab = image[z], labels[z]
    drawn = sc.from_intensities(t1, slab, np.random.default_rng(1), contrast, _PLAIN)
    hard = sc.synthesise(slab, np.random.default_rng(1), contrast, _PLAIN)
    inside = slab > 0
    assert drawn.dtype == np.float32 and not drawn[~inside].any() and 0.0 <= drawn.min() and drawn.max() <= 1.0
    means = _class_means(drawn, slab, core=True)
    order = sc.CONTRAST_ORDER[contrast]
    assert means[order[0]] < means[order[1]] < means[order[2]], means
    for tissue in (sc.CSF, sc.GM, sc.WM):
        assert np.unique(np.round(hard[slab == tissue], 4)).size <= 3  # one value a class (and the normalisation's clip)
        assert np.unique(np.round(drawn[slab == tissue], 4)).size > 50  # the T1's own shades within it
    if contrast in ("T1", "T1C"):  # same order as the T1: a monotone map of it inside the brain
        order_in, order_out = np.argsort(t1[inside], kind="stable"), drawn[inside]
        assert (np.diff(order_out[order_in]) >= -1e-6).all()
    np.testing.assert_array_equal(drawn, sc.from_intensities(t1, slab, np.random.default_rng(1), contrast, _PLAIN))


def test_the_pure_tissue_band_is_the_share_of_a_class_drawn_at_its_mean(volume, labels):
    """pure_tissue is the percentile band of a class's T1 intensities that takes the class's mean exactly (the
    rest is partial volume, between means): a wider band, a larger plateau; the default is PURE_TISSUE (25-75,
    chosen on healthy scans, version 8)."""
    image, brain = volume
    t1, slab = image[25:55], labels[25:55]

    def plateau(band):
        drawn = sc.from_intensities(t1, slab, np.random.default_rng(1), "FLAIR", _PLAIN, pure_tissue=band)
        shares = []
        for tissue in (sc.CSF, sc.GM, sc.WM):
            _, counts = np.unique(drawn[slab == tissue], return_counts=True)
            shares.append(counts.max() / counts.sum())
        return np.array(shares), drawn

    narrow, default = plateau((25.0, 75.0))
    wide, _ = plateau((15.0, 85.0))
    assert sc.PURE_TISSUE == (25.0, 75.0)
    np.testing.assert_array_equal(default, sc.from_intensities(t1, slab, np.random.default_rng(1), "FLAIR", _PLAIN))
    # grey matter (between the others on T1) keeps its band; CSF and white matter also the tail beyond it
    np.testing.assert_allclose(narrow, [0.75, 0.50, 0.75], atol=0.02)
    np.testing.assert_allclose(wide, [0.85, 0.70, 0.85], atol=0.02)


def test_a_slice_without_one_tissue_is_drawn_from_its_labels(volume, labels):
    image, brain = volume
    slab = labels[40].copy()
    slab[slab == sc.CSF] = sc.GM
    np.testing.assert_array_equal(sc.from_intensities(image[40], slab, np.random.default_rng(2), "T2"),
                                  sc.synthesise(slab, np.random.default_rng(2), "T2"))


def test_random_contrast_draws_every_order(labels):
    orders = set()
    for seed in range(30):
        means = sc.class_means(np.random.default_rng(seed))
        orders.add(tuple(np.argsort(means[1:])))
    assert len(orders) == 6


def test_class_means_bias_and_noise_ranges():
    rng = np.random.default_rng(0)
    for contrast in sc.CONTRASTS:
        means = sc.class_means(rng, contrast)
        darkest, middle, brightest = sc.CONTRAST_ORDER[contrast]
        (middle_lo, middle_hi), (dark_lo, dark_hi) = sc.CONTRAST_RATIOS[contrast]
        assert sc.BRIGHTEST_RANGE[0] <= means[brightest] <= sc.BRIGHTEST_RANGE[1]
        assert middle_lo <= means[middle] / means[brightest] <= middle_hi
        assert dark_lo <= means[darkest] / means[middle] <= dark_hi
    field = sc.bias_field((40, 48, 48), rng, 0.2)
    assert np.exp(-0.2) - 1e-5 <= field.min() and field.max() <= np.exp(0.2) + 1e-5
    assert np.abs(np.log(field)).max() > 0.19  # the drawn strength is reached, not only bounded
    assert np.abs(np.diff(np.log(field), axis=1)).max() < 0.05  # smooth over the brain
    flat = np.full((64, 64), sc.WM, np.uint8)
    quiet = sc.SynthSettings(class_std=(0.0, 0.0), blur_sigma=(0.0, 0.0), bias_max=0.0, noise_std=(0.02, 0.02),
                             thick_slices=(1,))
    raw = sc.synthesise(flat, np.random.default_rng(1), "T1", quiet)
    assert raw.std() > 0.1  # noise alone spans the normalised range of a flat image
    thick = sc.thick_slices(np.arange(12, dtype=np.float32).reshape(1, 12).repeat(3, 0), 3, axis=1)
    assert thick.shape == (3, 12) and np.abs(thick - np.arange(12)).max() < 1.01


@needs_shared_data()
def test_a_healthy_ixi_scan_gives_ordered_classes_and_contrasts():
    from NormativeADLib.training import data
    from NormativeADLib import io
    from NormativeADLib.pipeline import preprocess
    from NormativeADLib.core.grid import ModelGrid

    path = sorted(data.list_scans(SHARED_DATA / "healthy" / "ixi_t1").values())[0]
    prepared = preprocess.prepare(io.read_scan(path), ModelGrid())
    labels = sc.labels_for_volume(prepared.image, prepared.brain)
    means = _class_means(prepared.image, labels)
    assert means[sc.CSF] < means[sc.GM] < means[sc.WM]
    # IXI's bias field widens every class; CSF must not collapse (it held 0.7 % of this brain, the
    # ventricles grey matter, while global mixing weights multiplied the atlas priors)
    brain = prepared.brain
    assert 0.04 < (labels[brain] == sc.CSF).mean() < 0.2
    ventricles = (sc.tissue_priors()[sc.CSF] > 0.8) & brain
    assert (labels[ventricles] == sc.CSF).mean() > 0.6
    image = sc.synthesise(labels[30:50], np.random.default_rng(0), "FLAIR")
    flair = _class_means(image, labels[30:50], core=True)
    assert flair[sc.CSF] < flair[sc.WM] < flair[sc.GM]


# --- the preview command -----------------------------------------------------------------------------

def test_preview_command_writes_a_png_grid(tmp_path):
    from NormativeADLib import cli

    out = tmp_path / "grid.png"
    assert cli.main(["anomalies", "preview", "--out", str(out), "--columns", "2", "--contrast", "T2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["anomalies", "preview", "--out", str(out)]) == 4  # never replaced without --overwrite


def test_preview_knows_every_generator():
    from NormativeADLib.cli import anomalies as anomalies_cli

    assert anomalies_cli._KINDS == synthetic.KINDS  # repeated there to keep `normativead --help` light
