"""Pretrained feature networks for normative-learning metrics: LPIPS and the FID Inception.

Both are rebuilt here layer for layer, without torchvision, so that the published weights load
with strict key and shape checks and give the numbers of the reference code:
- LPIPS v0.1 on AlexNet (Zhang et al. 2018), as the `lpips` package's LPIPS(net='alex'):
  torchvision's ImageNet AlexNet features plus the lpips package's linear heads.
- The FID Inception v3 (pool3, 2048 features), as pytorch-fid's FIDInceptionV3 with
  resize_input=True and normalize_input=True.

Nothing is ever downloaded. find_weights looks for the files where torchvision, pytorch-fid and
lpips keep them; when one is missing, MissingWeights says which file, where it looked and how
to provide it. No other network is ever substituted: a metric computed on other weights would
not be comparable with published numbers.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import InputError, ModelError

WEIGHTS_ENV = "NORMATIVEAD_WEIGHTS"


@dataclass(frozen=True)
class WeightFile:
    filename: str
    what: str
    how: str  # how to obtain it on a machine with internet


FILES = {
    "alexnet": WeightFile(
        "alexnet-owt-7be5be79.pth",
        "torchvision's ImageNet AlexNet, the LPIPS backbone, about 233 MB",
        "on a machine with internet and torchvision run "
        "python -c \"import torchvision; torchvision.models.alexnet(weights='IMAGENET1K_V1')\" "
        "which saves it in ~/.cache/torch/hub/checkpoints, and copy it from there",
    ),
    "lpips_heads": WeightFile(
        "alex.pth",
        "the LPIPS v0.1 linear heads for AlexNet (weights/v0.1/alex.pth of the lpips package), about 6 KB",
        # --no-deps: lpips is never imported, and its torchvision requirement could replace torch.
        "pip install --no-deps lpips (it ships the file, which is then found), "
        "or copy weights/v0.1/alex.pth out of an lpips install",
    ),
    "inception": WeightFile(
        "pt_inception-2015-12-05-6726825d.pth",
        "pytorch-fid's FID Inception v3 (TensorFlow's 2015-12-05 Inception), about 91 MB",
        "on a machine with internet and pytorch-fid run "
        "python -c \"from pytorch_fid.inception import fid_inception_v3; fid_inception_v3()\" "
        "which saves it in ~/.cache/torch/hub/checkpoints, and copy it from there",
    ),
}


class MissingWeights(ModelError):
    """A pretrained weights file is not on this machine; the message says how to provide it."""


# --- Finding the files ---------------------------------------------------------------------


def torch_checkpoints() -> Path:
    """The folder torchvision and pytorch-fid download into (torch.hub's rule, without torch.hub)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch"
    )
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def _lpips_package_folder() -> Path | None:
    """weights/v0.1 of an installed lpips package. find_spec of a top-level name does not import
    it, which matters: importing lpips imports torchvision, which may be broken or absent."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1"


def search_folders(filename: str) -> list[tuple[Path, str]]:
    """(folder, why it is searched), in search order."""
    folders = []
    if os.environ.get(WEIGHTS_ENV):
        folders.append((Path(os.environ[WEIGHTS_ENV]).expanduser(), WEIGHTS_ENV))
    folders.append((torch_checkpoints(), "torch hub cache, TORCH_HOME"))
    if filename == FILES["lpips_heads"].filename:
        package = _lpips_package_folder()
        if package is not None:
            folders.append((package, "installed lpips package"))
    return folders


def _describe(filename: str) -> WeightFile:
    for file in FILES.values():
        if file.filename == filename:
            return file
    return WeightFile(filename, "a weights file", "copy it from a machine that has it")


def find_weights(filename: str, explicit: str | os.PathLike | None = None) -> Path:
    """The path of a weights file: `explicit` if given, else the first search folder holding it."""
    file = _describe(filename)
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise MissingWeights(f"Weights file {path} does not exist (it should be {filename}: {file.what}).")
        return path
    folders = search_folders(filename)
    for folder, _ in folders:
        if (folder / filename).is_file():
            return folder / filename
    searched = "\n".join(f"  {folder}  ({why})" for folder, why in folders)
    lpips_note = ""
    if filename == FILES["lpips_heads"].filename and not any(w.startswith("installed") for _, w in folders):
        lpips_note = "\n  (no lpips package is installed)"
    raise MissingWeights(
        f"Missing weights file {filename}: {file.what}. Searched:\n{searched}{lpips_note}\n"
        f"Nothing is downloaded by NormativeAD. To provide it: {file.how}, into one of the folders "
        f"above; or set {WEIGHTS_ENV} to a folder holding it; or pass its path."
    )


def _found(filename: str) -> bool:
    try:
        find_weights(filename)
        return True
    except MissingWeights:
        return False


def lpips_available() -> bool:
    return _found(FILES["alexnet"].filename) and _found(FILES["lpips_heads"].filename)


def inception_available() -> bool:
    return _found(FILES["inception"].filename)


# --- Loading with strict checks ----------------------------------------------------------


def _read(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torch error type differs by file problem; all mean "not usable"
        raise ModelError(f"Cannot read weights file {path}: {error}") from error
    if not isinstance(state, dict):
        raise ModelError(f"Weights file {path} holds a {type(state).__name__}, not a state dict.")
    return state


def _load_strict(module: nn.Module, state: dict, path: Path, what: str) -> None:
    """Load every tensor by name and shape, with a short message naming the file when it is
    not the expected one. BatchNorm's num_batches_tracked may be absent from old checkpoints:
    torch fills it in itself, so it is not required here."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(getattr(state[k], 'shape', ()))} instead of {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    ]
    if not problems:
        try:
            module.load_state_dict(state, strict=True)
            return
        except RuntimeError as error:
            problems = [str(error)[:500]]
    raise ModelError(f"Weights file {path} is not {what}: " + "; ".join(problems))


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


# --- LPIPS -------------------------------------------------------------------------------


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet.features, index for index, so `features.N.*` keys load."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


class _LinHead(nn.Module):
    """lpips' NetLinLayer: Dropout then a 1x1 conv, so the file's `linN.model.1.weight` loads."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + 1e-10)


class LPIPS(nn.Module):
    """LPIPS v0.1, AlexNet: inputs (N, 3, H, W) in [-1, 1]. Same operations, constants and order
    as the lpips package, so that equal weights give equal numbers."""

    CHANNELS = (64, 192, 384, 256, 256)
    TAPS = (1, 4, 7, 9, 11)  # features[i] whose output is relu1..relu5
    MIN_SIZE = 31  # smallest side for which relu5 still has a pixel

    def __init__(self):
        super().__init__()
        # Not in the checkpoints: constants of the metric, so not saved with the state dict.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None], persistent=False)
        self.features = alexnet_features()
        self.lins = nn.ModuleDict({f"lin{i}": _LinHead(c) for i, c in enumerate(self.CHANNELS)})

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features[: self.TAPS[-1] + 1]):
            x = layer(x)
            if i in self.TAPS:
                out.append(x)
        return out

    def forward(self, in0: torch.Tensor, in1: torch.Tensor, spatial: bool = False) -> torch.Tensor:
        """(N, 1, 1, 1) distances, or with spatial=True an (N, 1, H, W) map whose sum of layers
        is upsampled to the input size (for masked LPIPS)."""
        total = 0
        for i, (f0, f1) in enumerate(zip(self._taps(in0), self._taps(in1))):
            d = self.lins[f"lin{i}"]((_unit(f0) - _unit(f1)) ** 2)
            if spatial:
                d = F.interpolate(d, size=tuple(in0.shape[2:]), mode="bilinear", align_corners=False)
            else:
                d = d.mean([2, 3], keepdim=True)
            total = total + d
        return total


def load_lpips(backbone: str | os.PathLike | None = None, heads: str | os.PathLike | None = None) -> LPIPS:
    """LPIPS with torchvision's ImageNet AlexNet and the lpips v0.1 heads; frozen, in eval mode."""
    net = LPIPS()
    path = find_weights(FILES["alexnet"].filename, backbone)
    # torchvision's file also holds the classifier, which LPIPS does not use; the trunk holder
    # keeps the file's own key names in error messages.
    trunk = nn.Module()
    trunk.features = net.features
    features = {k: v for k, v in _read(path).items() if k.startswith("features.")}
    _load_strict(trunk, features, path, FILES["alexnet"].what)
    path = find_weights(FILES["lpips_heads"].filename, heads)
    _load_strict(net.lins, _read(path), path, FILES["lpips_heads"].what)
    return _frozen(net)


def _images(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputError(f"{name} must be (N, 1, H, W) single-channel images, got shape {tuple(x.shape)}.")
    return x


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def lpips_distance(net: LPIPS, a, b, spatial: bool = False) -> torch.Tensor:
    """LPIPS between (N, 1, H, W) images in [0, 1]: (N,) distances, or (N, 1, H, W) maps.

    As LPIPS is applied to grayscale medical images: mapped to [-1, 1] (lpips' normalize=True)
    and repeated to three channels."""
    a, b = _images(a, "a"), _images(b, "b")
    if a.shape != b.shape:
        raise InputError(f"LPIPS needs images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    if min(a.shape[2:]) < LPIPS.MIN_SIZE:
        raise InputError(f"LPIPS needs images of at least {LPIPS.MIN_SIZE} pixels a side, got {tuple(a.shape[2:])}.")
    device = _device(net)
    x0, x1 = ((2 * x - 1).repeat(1, 3, 1, 1).to(device) for x in (a, b))
    d = net(x0, x1, spatial=spatial)
    return d if spatial else d.flatten()


# --- FID Inception -----------------------------------------------------------------------


class _Conv(nn.Module):
    """torchvision's BasicConv2d: conv without bias, BatchNorm (eps 0.001), ReLU."""

    def __init__(self, cin: int, cout: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x):
    # TensorFlow's average pool, which the FID weights were trained with, ignores the padding.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):  # FIDInceptionA
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, kernel_size=1)
        self.branch5x5_1 = _Conv(cin, 48, kernel_size=1)
        self.branch5x5_2 = _Conv(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = _Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, kernel_size=3, padding=1)
        self.branch_pool = _Conv(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class _BlockB(nn.Module):  # torchvision's InceptionB (Mixed_6a), unchanged in FID
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = _Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _BlockC(nn.Module):  # FIDInceptionC
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 192, kernel_size=1)
        self.branch7x7_1 = _Conv(cin, c7, kernel_size=1)
        self.branch7x7_2 = _Conv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = _Conv(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _Conv(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = _Conv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _Conv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _Conv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _Conv(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = _Conv(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_tf_avg_pool(x))], 1)


class _BlockD(nn.Module):  # torchvision's InceptionD (Mixed_7a), unchanged in FID
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _Conv(cin, 192, kernel_size=1)
        self.branch3x3_2 = _Conv(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = _Conv(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _BlockE(nn.Module):  # FIDInceptionE_1 (avg pool), FIDInceptionE_2 (max pool)
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, kernel_size=1)
        self.branch3x3_1 = _Conv(cin, 384, kernel_size=1)
        self.branch3x3_2a = _Conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = _Conv(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        # The last FID block pools with max, a quirk of the TensorFlow graph the weights come from.
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """pytorch-fid's FID Inception v3 up to pool3: inputs (N, 3, H, W) in [0, 1], out (N, 2048).
    Attribute names are torchvision's Inception3 (aux_logits=False, 1008 classes), the layout of
    pytorch-fid's checkpoint; fc is held only so that the checkpoint loads strictly."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, kernel_size=3)
        self.Mixed_5b = _BlockA(192, pool_features=32)
        self.Mixed_5c = _BlockA(256, pool_features=64)
        self.Mixed_5d = _BlockA(288, pool_features=64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, c7=128)
        self.Mixed_6c = _BlockC(768, c7=160)
        self.Mixed_6d = _BlockC(768, c7=160)
        self.Mixed_6e = _BlockC(768, c7=192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pytorch-fid's resize_input then normalize_input, in that order.
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


def load_inception(path: str | os.PathLike | None = None) -> FIDInception:
    """The FID Inception with pytorch-fid's weights; frozen, in eval mode."""
    net = FIDInception()
    found = find_weights(FILES["inception"].filename, path)
    _load_strict(net, _read(found), found, FILES["inception"].what)
    return _frozen(net)


def inception_features(net: FIDInception, images, batch_size: int = 32) -> np.ndarray:
    """pool3 features (N, 2048, float64) of (N, 1, H, W) images in [0, 1], repeated to RGB as
    pytorch-fid does for grayscale images."""
    images = _images(images, "images")
    device = _device(net)
    out = [np.zeros((0, 2048))]
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].repeat(1, 3, 1, 1).to(device)
            out.append(net(batch).cpu().numpy().astype(np.float64))
    return np.concatenate(out)
