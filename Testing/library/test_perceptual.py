"""LPIPS and the FID Inception: the real weight finding and loading code, run on checkpoints made
here in the published files' key layouts; the real weights only where a machine has them."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from NormativeADLib.measures import perceptual
from NormativeADLib.core.errors import InputError, ModelError
from NormativeADLib.measures.perceptual import FILES, MissingWeights

ALEXNET = FILES["alexnet"].filename
HEADS = FILES["lpips_heads"].filename
INCEPTION = FILES["inception"].filename


@pytest.fixture(scope="module")
def inception_state():
    torch.manual_seed(1)
    return perceptual.FIDInception().state_dict()


@pytest.fixture(scope="module")
def weights(tmp_path_factory, inception_state) -> Path:
    """A folder holding the three files, random weights in the published key layouts."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    features = {f"features.{k}": v for k, v in perceptual.alexnet_features().state_dict().items()}
    # torchvision's file also holds the classifier, which LPIPS ignores: small stand-ins by name.
    classifier = {f"classifier.{i}.{p}": torch.zeros(3) for i in (1, 4, 6) for p in ("weight", "bias")}
    torch.save({**features, **classifier}, folder / ALEXNET)
    # Non-negative, as the real heads are.
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(perceptual.LPIPS.CHANNELS)}
    torch.save(heads, folder / HEADS)
    torch.save(inception_state, folder / INCEPTION)
    return folder


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """No weights anywhere: an empty torch home, no weights folder, no lpips package."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(perceptual.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(perceptual, "_lpips_package_folder", lambda: None)
    return monkeypatch


@pytest.fixture
def in_folder(nowhere, weights):
    nowhere.setenv(perceptual.WEIGHTS_ENV, str(weights))
    return weights


@pytest.fixture(scope="module")
def lpips_net(weights):
    return perceptual.load_lpips(weights / ALEXNET, weights / HEADS)


def slices(n=3, size=96, seed=0):
    """Smooth blob images in [0, 1], a little like brain slices."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.35)]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        out.append(np.clip(blob + 0.05 * rng.standard_normal((size, size)), 0, 1))
    return torch.tensor(np.stack(out)[:, None], dtype=torch.float32)


# --- Finding the files ---------------------------------------------------------------------


def test_missing_weights_say_which_file_where_searched_and_how(nowhere, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    nowhere.setenv(perceptual.WEIGHTS_ENV, str(empty))
    assert not perceptual.lpips_available()
    assert not perceptual.inception_available()
    with pytest.raises(MissingWeights) as lp:
        perceptual.load_lpips()
    with pytest.raises(MissingWeights) as inc:
        perceptual.load_inception()
    hub = str(tmp_path / "torch" / "hub" / "checkpoints")
    for error, filename, how in ((lp, ALEXNET, "IMAGENET1K_V1"), (inc, INCEPTION, "fid_inception_v3")):
        message = str(error.value)
        assert isinstance(error.value, ModelError)
        for part in (filename, str(empty), hub, perceptual.WEIGHTS_ENV, how, "MB"):
            assert part in message


def test_heads_missing_beside_backbone_says_lpips(nowhere, tmp_path, weights):
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / ALEXNET).write_bytes((weights / ALEXNET).read_bytes())
    nowhere.setenv(perceptual.WEIGHTS_ENV, str(folder))
    assert not perceptual.lpips_available()
    with pytest.raises(MissingWeights, match="pip install --no-deps lpips") as error:
        perceptual.load_lpips()
    assert HEADS in str(error.value) and "no lpips package is installed" in str(error.value)


def test_explicit_path_must_exist(nowhere, tmp_path):
    with pytest.raises(MissingWeights, match="nope.pth") as error:
        perceptual.load_inception(tmp_path / "nope.pth")
    assert INCEPTION in str(error.value)


def test_torch_home_follows_torch_hub_rule(nowhere, tmp_path):
    nowhere.delenv("TORCH_HOME")
    nowhere.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    hub = tmp_path / "xdg" / "torch" / "hub" / "checkpoints"
    assert perceptual.torch_checkpoints() == hub
    hub.mkdir(parents=True)
    (hub / INCEPTION).write_bytes(b"x")
    assert perceptual.find_weights(INCEPTION) == hub / INCEPTION
    nowhere.delenv("XDG_CACHE_HOME")
    nowhere.setenv("HOME", str(tmp_path / "home"))
    assert perceptual.torch_checkpoints() == tmp_path / "home" / ".cache" / "torch" / "hub" / "checkpoints"


def test_weights_folder_comes_before_torch_home(nowhere, tmp_path):
    for name in ("first", "torch/hub/checkpoints"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / INCEPTION).write_bytes(b"x")
    nowhere.setenv(perceptual.WEIGHTS_ENV, str(tmp_path / "first"))
    assert perceptual.find_weights(INCEPTION) == tmp_path / "first" / INCEPTION


def test_installed_lpips_heads_are_found_without_importing_lpips(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(perceptual.WEIGHTS_ENV, raising=False)
    package = tmp_path / "site" / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('lpips must not be imported')\n")
    (package / "weights" / "v0.1" / HEADS).write_bytes(b"x")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "lpips", raising=False)
    assert perceptual.find_weights(HEADS) == package / "weights" / "v0.1" / HEADS
    assert "lpips" not in sys.modules
    # Only the heads are looked for there.
    assert all("lpips" not in why for _, why in perceptual.search_folders(ALEXNET))


# --- Strict loading ----------------------------------------------------------------------


def test_module_key_layouts_are_the_published_ones(inception_state):
    features = perceptual.alexnet_features().state_dict()
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "0.weight": (64, 3, 11, 11), "0.bias": (64,), "3.weight": (192, 64, 5, 5), "3.bias": (192,),
        "6.weight": (384, 192, 3, 3), "6.bias": (384,), "8.weight": (256, 384, 3, 3), "8.bias": (256,),
        "10.weight": (256, 256, 3, 3), "10.bias": (256,),
    }  # fmt: skip
    # torchvision's Inception3(aux_logits=False, num_classes=1008), as pytorch-fid builds it.
    assert len(inception_state) == 566
    assert tuple(inception_state["fc.weight"].shape) == (1008, 2048)
    assert tuple(inception_state["Mixed_7c.branch_pool.conv.weight"].shape) == (192, 2048, 1, 1)
    assert "Mixed_6e.branch7x7dbl_5.bn.num_batches_tracked" in inception_state
    assert not any(k.startswith("AuxLogits") for k in inception_state)


def test_wrong_lpips_files_are_named(tmp_path, weights):
    state = torch.load(weights / ALEXNET, weights_only=True)
    state["features.3.w"] = state.pop("features.3.weight")
    renamed = tmp_path / "renamed.pth"
    torch.save(state, renamed)
    with pytest.raises(ModelError, match="renamed.pth") as error:
        perceptual.load_lpips(renamed, weights / HEADS)
    assert "missing (1): features.3.weight" in str(error.value)

    heads = torch.load(weights / HEADS, weights_only=True)
    heads["lin2.model.1.weight"] = torch.rand(1, 32, 1, 1)
    shape = tmp_path / "shape.pth"
    torch.save(heads, shape)
    with pytest.raises(ModelError, match="shape.pth.*wrong shape.*lin2.model.1.weight"):
        perceptual.load_lpips(weights / ALEXNET, shape)
    # The backbone handed in as heads.
    with pytest.raises(ModelError, match=ALEXNET):
        perceptual.load_lpips(weights / ALEXNET, weights / ALEXNET)


def test_wrong_inception_files_are_named(tmp_path, inception_state):
    state = dict(inception_state)
    del state["fc.bias"]
    state["AuxLogits.fc.weight"] = torch.zeros(1008, 768)  # torchvision's ImageNet Inception has these
    wrong = tmp_path / "wrong.pth"
    torch.save(state, wrong)
    with pytest.raises(ModelError, match="wrong.pth") as error:
        perceptual.load_inception(wrong)
    assert "missing (1): fc.bias" in str(error.value) and "unexpected (1): AuxLogits.fc.weight" in str(error.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="garbage.pth"):
        perceptual.load_inception(garbage)
    listed = tmp_path / "list.pth"
    torch.save([1, 2], listed)
    with pytest.raises(ModelError, match="list.pth.*not a state dict"):
        perceptual.load_inception(listed)


# --- LPIPS -------------------------------------------------------------------------------


def test_lpips_loads_from_weights_folder_frozen(in_folder, weights):
    assert perceptual.lpips_available()
    net = perceptual.load_lpips()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    saved = torch.load(weights / ALEXNET, weights_only=True)
    assert torch.equal(net.features[10].weight, saved["features.10.weight"])
    heads = torch.load(weights / HEADS, weights_only=True)
    assert torch.equal(net.lins["lin4"].model[1].weight, heads["lin4.model.1.weight"])


def test_lpips_is_a_distance_on_96_pixel_slices(lpips_net):
    a, b = slices(3, seed=0), slices(3, seed=1)
    assert torch.equal(perceptual.lpips_distance(lpips_net, a, a), torch.zeros(3))
    ab, ba = perceptual.lpips_distance(lpips_net, a, b), perceptual.lpips_distance(lpips_net, b, a)
    assert ab.shape == (3,) and torch.equal(ab, ba) and (ab > 0).all()
    near = perceptual.lpips_distance(lpips_net, a, (a + 0.01 * torch.randn_like(a)).clamp(0, 1))
    assert (near < ab).all()


def test_lpips_spatial_map_averages_to_the_distance(lpips_net):
    a, b = slices(2, seed=2), slices(2, seed=3)
    d = perceptual.lpips_distance(lpips_net, a, b)
    m = perceptual.lpips_distance(lpips_net, a, b, spatial=True)
    assert m.shape == (2, 1, 96, 96)
    # Bilinear upsampling keeps the mean up to its border; against lpips itself this ratio was 1 +- 1e-4.
    np.testing.assert_allclose(m.mean((1, 2, 3)).numpy(), d.numpy(), rtol=1e-3)
    # A change in one corner shows in that corner of the map.
    c = a.clone()
    c[:, :, :24, :24] = 1.0
    corner = perceptual.lpips_distance(lpips_net, a, c, spatial=True)
    assert (corner[:, :, :24, :24].mean((1, 2, 3)) > 5 * corner[:, :, 60:, 60:].mean((1, 2, 3))).all()


def test_lpips_heads_weigh_the_layers(tmp_path, weights, lpips_net):
    heads = {k: 2 * v for k, v in torch.load(weights / HEADS, weights_only=True).items()}
    torch.save(heads, tmp_path / "double.pth")
    double = perceptual.load_lpips(weights / ALEXNET, tmp_path / "double.pth")
    a, b = slices(2, seed=4), slices(2, seed=5)
    torch.testing.assert_close(perceptual.lpips_distance(double, a, b), 2 * perceptual.lpips_distance(lpips_net, a, b))


def test_lpips_rejects_bad_inputs(lpips_net):
    with pytest.raises(InputError, match="at least 31"):
        perceptual.lpips_distance(lpips_net, torch.zeros(1, 1, 30, 64), torch.zeros(1, 1, 30, 64))
    with pytest.raises(InputError, match="one shape"):
        perceptual.lpips_distance(lpips_net, torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 65))
    with pytest.raises(InputError, match=r"\(N, 1, H, W\)"):
        perceptual.lpips_distance(lpips_net, torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))


# --- FID Inception -----------------------------------------------------------------------


def test_inception_features_pool3_deterministic_and_batched(in_folder):
    assert perceptual.inception_available()
    net = perceptual.load_inception()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    images = slices(2, seed=6)
    whole = perceptual.inception_features(net, images)
    assert whole.shape == (2, 2048) and whole.dtype == np.float64
    assert np.isfinite(whole).all() and (whole >= 0).all()  # after ReLU and average pooling
    one_by_one = perceptual.inception_features(net, images, batch_size=1)
    np.testing.assert_allclose(one_by_one, whole, rtol=1e-4, atol=1e-6 * np.abs(whole).max())
    assert np.array_equal(perceptual.inception_features(net, images), whole)
    assert not np.allclose(whole[0], whole[1])
    assert perceptual.inception_features(net, torch.zeros(0, 1, 96, 96)).shape == (0, 2048)


def test_inception_checkpoint_without_batchnorm_counters_loads(tmp_path, inception_state):
    # Checkpoints saved by old torch lack num_batches_tracked and torch's version metadata.
    state = {k: v for k, v in inception_state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    net = perceptual.load_inception(tmp_path / "old.pth")
    assert torch.equal(net.Mixed_7c.branch_pool.bn.running_var, inception_state["Mixed_7c.branch_pool.bn.running_var"])


# --- The real weights, where this machine has them ----------------------------------------


def real_slice() -> torch.Tensor:
    import nibabel as nib

    sample = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "mslub_patient26_t1.nii.gz"
    volume = np.asarray(nib.load(sample).dataobj, dtype=np.float32)
    image = volume[:, :, volume.shape[2] // 2]
    image = np.clip(image / np.percentile(image, 99.5), 0, 1)
    x = torch.tensor(image)[None, None]
    return torch.nn.functional.interpolate(x, size=(96, 96), mode="bilinear", align_corners=False)


@pytest.mark.skipif(
    not perceptual.lpips_available(),
    reason=f"real LPIPS weights ({ALEXNET}, {HEADS}) not found: set {perceptual.WEIGHTS_ENV} or fill the torch hub cache",
)
def test_real_lpips_ranks_noise_below_a_blank_image():
    net = perceptual.load_lpips()
    assert all((head.model[1].weight >= 0).all() for head in net.lins.values())  # lpips clamps its heads
    x = real_slice()
    torch.manual_seed(0)
    noisy = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    near = perceptual.lpips_distance(net, x, noisy).item()
    far = perceptual.lpips_distance(net, x, torch.zeros_like(x)).item()
    assert 0 < near < 0.1 and near < far / 3


@pytest.mark.skipif(
    not perceptual.inception_available(),
    reason=f"real FID Inception weights ({INCEPTION}) not found: set {perceptual.WEIGHTS_ENV} or fill the torch hub cache",
)
def test_real_inception_features_are_closer_for_a_noisy_copy():
    net = perceptual.load_inception()
    x = real_slice()
    torch.manual_seed(0)
    batch = torch.cat([x, (x + 0.01 * torch.randn_like(x)).clamp(0, 1), torch.zeros_like(x)])
    f = perceptual.inception_features(net, batch)
    assert f.shape == (3, 2048) and np.isfinite(f).all() and (f >= 0).all()
    assert np.linalg.norm(f[0] - f[1]) < np.linalg.norm(f[0] - f[2]) / 3


def test_per_case_lpips_outside_the_anomaly(nowhere, weights, lpips_net):
    """The pipeline's per-case LPIPS: only with the standard weights present, over the given region."""
    from NormativeADLib.measures import metrics
    from NormativeADLib.pipeline import analysis

    analysis._standard_lpips.cache_clear()
    try:
        assert analysis._lpips_outside(np.zeros((2, 96, 96), np.float32), np.zeros((2, 96, 96), np.float32),
                                       np.ones((2, 96, 96), bool)) is None
        analysis._standard_lpips.cache_clear()
        nowhere.setenv(perceptual.WEIGHTS_ENV, str(weights))
        assert analysis._standard_lpips() is not None
    finally:
        analysis._standard_lpips.cache_clear()
    image = slices(4)[:, 0].numpy()
    region = np.zeros(image.shape, bool)
    region[:, 20:70, 20:70] = True
    assert metrics.lpips_in_region(lpips_net, image, image, region) == pytest.approx(0.0, abs=1e-7)
    changed = image.copy()
    changed[:, 80:] = 0  # outside the region: the region's LPIPS moves little
    inside = image.copy()
    inside[:, 30:60, 30:60] = 0
    outside_change = metrics.lpips_in_region(lpips_net, image, changed, region)
    inside_change = metrics.lpips_in_region(lpips_net, image, inside, region)
    assert 0 < outside_change < inside_change
    assert metrics.lpips_in_region(lpips_net, image, inside, np.zeros_like(region)) is None


def test_standard_indices_run_through_both_networks(weights, lpips_net, inception_state):
    """RQI and AHI through the real LPIPS and Inception code paths (test weights): the values that
    hold for any network (identity: RQI 1; restorations equal to unseen healthy slices: AHI 1)."""
    from NormativeADLib.measures import metrics
    from NormativeADLib.evaluation import normative

    net = perceptual.FIDInception()
    net.load_state_dict(inception_state)
    net.eval()
    healthy = slices(6, seed=1)[:, 0].numpy()
    reference = slices(6, seed=2)[:, 0].numpy()
    pathological = healthy.copy()
    pathological[:, 30:50, 30:50] = 1.0
    distance = normative.lpips_distance_fn(lpips_net)
    features = normative.inception_features_fn(net)
    assert normative.rqi(healthy, healthy, distance) == pytest.approx(1.0)
    assert 0 < normative.rqi(healthy, reference, distance) < 1
    sets = normative.SliceSets(healthy, healthy, reference, pathological, healthy)
    out = normative.indices(sets, [0.5], distance, features)
    assert out["RQI"] == pytest.approx(1.0) and out["AHI"] == pytest.approx(1.0)
    assert out["overall"] == pytest.approx((metrics.hmean(1.0, 0.5) + 1.0) / 2)


def test_inception_features_are_computed_once_per_content(inception_state):
    """A report compares models on the same healthy and reference slices: their features are reused."""
    from NormativeADLib.evaluation import normative

    net = perceptual.FIDInception()
    net.load_state_dict(inception_state)
    net.eval()
    features = normative.inception_features_fn(net)
    images = slices(2, seed=3)[:, 0].numpy()
    first = features(images)
    assert features(images.copy()) is first  # same content, another array: remembered
    other = images.copy()
    other[0, 20:40, 20:40] = 1.0
    assert features(other) is not first and not np.array_equal(features(other), first)
