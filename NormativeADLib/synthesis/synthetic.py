"""Synthetic anomalies on healthy scans: what a supervised anomaly segmenter (SADM) trains on.

A generator takes a healthy image in model space (a 2D slice (y, x) or a volume (z, y, x), float32
in [0, 1], zero outside the brain) with its brain mask and returns the image carrying one anomaly
and the anomaly's mask:

    generate(kind, image, brain, rng, other=None) -> (image_with_anomaly, mask)
    sample(image, brain, rng, other=None) -> (image_with_anomaly, mask, kind)

Contract of every kind (tested in Testing/library/test_synthetic.py):
- the same rng state gives the same output (numpy Generator, nothing global);
- the mask is non-empty, lies inside the brain, and holds between MIN_VOXELS and max_voxels(ndim)
  voxels (its extent is an ellipse/ellipsoid of semi-axes RADIUS_VOXELS, roughened by Perlin noise);
- voxels outside the mask are unchanged: each anomaly fades in over a soft edge of about
  EDGE_FRACTION of its radius that lies inside the mask, so the mask covers every changed voxel
  (also the faintest) and the background outside the brain stays 0;
- intensities stay in [0, 1].

Kinds (docs/synthetic.md shows each):
- "bright_blob": hyper-intense Perlin-shaped blob (MS lesion or oedema on FLAIR): every voxel of the
  mask rises by alpha * delta * (1 + texture), delta in SHIFT_RANGE, texture a Perlin pattern of
  amplitude up to 0.5, then clipped to 1;
- "dark_blob": hypo-intense textured blob (necrosis, a T1 black hole, a resection cavity): the same
  change downwards, clipped to 0;
- "foreign_patch": the mask filled from another subject's image (`other`, an (image, brain) pair on
  the same grid) or, without one, from elsewhere in the same image (CutPaste); alpha-blended with a
  strength in PATCH_ALPHA_RANGE (Foreign Patch Interpolation) or Poisson-blended (seamless: the
  patch's gradients, the host's intensities at the rim), half and half;
- "smoothing": the region blurred (Gaussian sigma in BLUR_SIGMA_RANGE voxels, brain-normalised so
  the background does not bleed in): lost texture and lost grey/white contrast;
- "swelling": a local radial deformation (mass effect): the region magnified about its centre, so
  that structures are pushed out by about SWELL_SHIFT_RANGE voxels at the rim of its core.

Every kind stays fast on a 96 x 96 slice (about a millisecond or two): Perlin noise and filters are
computed on the anomaly's bounding box only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from scipy import ndimage

KINDS = ("bright_blob", "dark_blob", "foreign_patch", "smoothing", "swelling")
# How often sample() picks each kind: intensity blobs are what most lesions look like, the others
# teach the segmenter that texture, context and shape can be abnormal too.
PROBABILITIES = {"bright_blob": 0.3, "dark_blob": 0.25, "foreign_patch": 0.2, "smoothing": 0.1, "swelling": 0.15}
# On T2 and FLAIR, the lesions a clinician looks for (MS plaques, oedema, tumour, infarcts, white-matter
# hyper-intensities) are bright: there the kinds are drawn mostly as bright blobs. The bright-lesion models
# train on this mix (their configs' `synthetic.kinds`) and the synthetic validation plants it in those two
# contrasts (SYNTHETIC_VALIDATION_VERSION 4). On T1 and T1c lesions go either way (black holes, necrosis;
# enhancement, blood), so they keep PROBABILITIES.
BRIGHT_LESION_PROBABILITIES = {"bright_blob": 0.5, "dark_blob": 0.1, "foreign_patch": 0.2, "smoothing": 0.05,
                               "swelling": 0.15}
CONTRAST_PROBABILITIES = {"T2": BRIGHT_LESION_PROBABILITIES, "FLAIR": BRIGHT_LESION_PROBABILITIES}

# semi-axes of the anomaly's ellipse (4 to 20 mm on the 2 mm model grid), each drawn log-uniformly, so
# that small anomalies (an MS lesion is a few mm) are as common as large ones (a tumour)
RADIUS_VOXELS = (2.0, 10.0)
ROUGHNESS = (0.15, 0.4)  # amplitude of the Perlin perturbation of the boundary, relative to the radius
EDGE_FRACTION = 0.3  # soft edge, relative to the radius, inside the mask
MIN_VOXELS = 8  # the smallest mask any generator returns
SHIFT_RANGE = (0.2, 0.5)  # intensity change of the blobs before texture (model intensities, [0, 1])
TEXTURE_AMPLITUDE = 0.5  # the blobs' texture multiplies the shift by 1 + [-0.5, 0.5]
PATCH_ALPHA_RANGE = (0.5, 1.0)  # share of the foreign patch in the blend
BLUR_SIGMA_RANGE = (1.5, 3.0)  # voxels
SWELL_SHIFT_RANGE = (1.5, 4.0)  # voxels
_MAX_ATTEMPTS = 20


def max_voxels(ndim: int) -> int:
    """The largest mask a generator returns: the ellipse/ellipsoid of the largest radius grown by
    the largest roughness (the documented size range's upper end)."""
    r = RADIUS_VOXELS[1] * (1.0 + ROUGHNESS[1]) + 1.0
    return int(np.ceil(np.pi * r ** 2 if ndim == 2 else 4.0 / 3.0 * np.pi * r ** 3))


def perlin(shape: tuple[int, ...], cells: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Perlin gradient noise on an array of `shape` (2D or 3D) with `cells` lattice cells per axis;
    values in about [-1, 1] (scaled by sqrt(ndim)/2), smooth at the scale shape/cells."""
    ndim = len(shape)
    cells = tuple(max(1.0, float(c)) for c in cells)
    lattice = tuple(int(np.ceil(c)) + 2 for c in cells)
    gradients = rng.normal(size=lattice + (ndim,))
    gradients /= np.linalg.norm(gradients, axis=-1, keepdims=True) + 1e-12
    axes = [np.arange(n) * (c / n) + rng.uniform(0, 1) for n, c in zip(shape, cells)]  # random lattice offset
    coords = np.meshgrid(*axes, indexing="ij")
    base = [np.floor(x).astype(np.intp) for x in coords]
    frac = [x - b for x, b in zip(coords, base)]
    fade = [f * f * f * (f * (f * 6 - 15) + 10) for f in frac]
    noise = np.zeros(shape, np.float64)
    for corner in itertools.product((0, 1), repeat=ndim):
        g = gradients[tuple(b + c for b, c in zip(base, corner))]
        dot = sum(g[..., k] * (frac[k] - corner[k]) for k in range(ndim))
        weight = np.prod([fade[k] if corner[k] else 1.0 - fade[k] for k in range(ndim)], axis=0)
        noise += weight * dot
    return (noise * (2.0 / np.sqrt(ndim))).astype(np.float32)


def fractal_perlin(shape: tuple[int, ...], cells: float, rng: np.random.Generator, octaves: int = 2) -> np.ndarray:
    """Sum of Perlin octaves (each twice the frequency and half the weight of the one before)."""
    total = np.zeros(shape, np.float32)
    for octave in range(octaves):
        total += perlin(shape, (cells * 2 ** octave,) * len(shape), rng) / 2 ** octave
    return total / (2.0 - 2.0 ** (1 - octaves))


# --- the anomaly's region -------------------------------------------------------------------

class _Region:
    """Where one anomaly lies: a bounding box of the image, the soft weight alpha (1 in the core,
    falling to 0 over the edge) inside it, its centre and radius."""

    def __init__(self, box: tuple[slice, ...], alpha: np.ndarray, centre: np.ndarray, radius: float):
        self.box, self.alpha, self.centre, self.radius = box, alpha, centre, radius

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        full = np.zeros(shape, bool)
        full[self.box] = self.alpha > 0
        return full


def _random_rotation(ndim: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    return q * np.sign(np.diag(r))


def _draw_region(brain: np.ndarray, rng: np.random.Generator, allowed: np.ndarray | None = None) -> _Region:
    """A Perlin-roughened ellipse inside the brain (and inside `allowed` where given), centred on a
    brain voxel at least 2 voxels from the brain's edge; a new draw when too little of it is brain."""
    ndim = brain.ndim
    inside = brain if allowed is None else brain & allowed
    core = ndimage.binary_erosion(inside, iterations=2)
    candidates = np.argwhere(core if core.sum() >= MIN_VOXELS else inside)
    if len(candidates) < MIN_VOXELS:
        raise ValueError(f"the brain holds {int(inside.sum())} voxels here; an anomaly needs at least {MIN_VOXELS}")
    for _ in range(_MAX_ATTEMPTS):
        region = _ellipse_at(candidates[rng.integers(len(candidates))], brain.shape, inside, rng)
        if (region.alpha > 0).sum() >= MIN_VOXELS:
            return region
    raise ValueError("no anomaly of the minimum size fits inside this brain")


def _ellipse_at(centre: np.ndarray, shape: tuple[int, ...], inside: np.ndarray, rng: np.random.Generator) -> _Region:
    ndim = len(shape)
    radii = np.exp(rng.uniform(*np.log(RADIUS_VOXELS), size=ndim))
    roughness = rng.uniform(*ROUGHNESS)
    half = int(np.ceil(radii.max() * (1 + roughness))) + 1
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    offsets = np.stack(np.meshgrid(*[np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)], indexing="ij"), -1)
    local = offsets @ _random_rotation(ndim, rng)  # the ellipse's own axes, at a random orientation
    distance = np.sqrt(((local / radii) ** 2).sum(-1))  # 1 on the smooth ellipse
    cells = max(1.0, (hi - lo).max() / 6.0)  # a few bumps around the rim
    boundary = 1.0 + roughness * fractal_perlin(distance.shape, cells, rng)
    alpha = np.clip((boundary - distance) / EDGE_FRACTION, 0.0, 1.0) * inside[box]
    return _Region(box, alpha.astype(np.float32), centre, float(radii.mean()))


def region_weight(brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The soft weight (1 in the core, falling to 0 over the edge, 0 outside) of one anomaly's region,
    on the whole image: for an anomaly drawn once and shown in several images (synth_study.py)."""
    region = _draw_region(np.asarray(brain, bool), rng)
    weight = np.zeros(brain.shape, np.float32)
    weight[region.box] = region.alpha
    return weight


# --- the generators ---------------------------------------------------------------------------

def _blob(image: np.ndarray, region: _Region, rng: np.random.Generator, sign: float) -> np.ndarray:
    delta = rng.uniform(*SHIFT_RANGE)
    texture = TEXTURE_AMPLITUDE * np.clip(fractal_perlin(region.alpha.shape, 2.0, rng), -1.0, 1.0)
    out = image.copy()
    out[region.box] = np.clip(image[region.box] + sign * region.alpha * delta * (1.0 + texture), 0.0, 1.0)
    return out


def bright_blob(image, brain, rng, other=None):
    region = _draw_region(brain, rng)
    return _blob(image, region, rng, +1.0), region.mask(image.shape)


def dark_blob(image, brain, rng, other=None):
    region = _draw_region(brain, rng)
    return _blob(image, region, rng, -1.0), region.mask(image.shape)


def foreign_patch(image, brain, rng, other=None):
    """Fill the region from another place: of `other` (another subject) or of this image."""
    source_image, source_brain = other if other is not None else (image, brain)
    if source_image.shape != image.shape:
        raise ValueError(f"the other subject's image {source_image.shape} is not on this grid {image.shape}")
    # the source region is the same shape moved by an offset; only voxels whose source is brain count
    source_centres = np.argwhere(ndimage.binary_erosion(source_brain, iterations=2))
    if len(source_centres) == 0:
        source_centres = np.argwhere(source_brain)
    targets = np.argwhere(brain)
    for _ in range(_MAX_ATTEMPTS):
        shift = source_centres[rng.integers(len(source_centres))] - targets[rng.integers(len(targets))]
        if other is None and np.abs(shift).max() < RADIUS_VOXELS[1]:
            continue  # a patch from its own neighbourhood would hardly differ
        allowed = _shifted(source_brain, -shift)
        try:
            region = _draw_region(brain, rng, allowed)
        except ValueError:
            continue
        source = _shifted(source_image, -shift)
        return _blend(image, source, region, rng), region.mask(image.shape)
    raise ValueError("no foreign patch fits inside this brain")


def _shifted(array: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """array moved by shift voxels (out[i] = array[i - shift]), zero (False) where nothing moves in."""
    out = np.zeros_like(array)
    dst = tuple(slice(max(s, 0), n + min(s, 0)) for s, n in zip(shift, array.shape))
    src = tuple(slice(max(-s, 0), n + min(-s, 0)) for s, n in zip(shift, array.shape))
    out[dst] = array[src]
    return out


def _blend(image: np.ndarray, source: np.ndarray, region: _Region, rng: np.random.Generator) -> np.ndarray:
    out = image.copy()
    host, patch = image[region.box], source[region.box]
    if rng.uniform() < 0.5:
        strength = rng.uniform(*PATCH_ALPHA_RANGE)
        out[region.box] = host + strength * region.alpha * (patch - host)
    else:
        out[region.box] = np.clip(poisson_blend(host, patch, region.alpha > 0), 0.0, 1.0)
    return out


def poisson_blend(host: np.ndarray, patch: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Seamless cloning (Perez et al. 2003): inside the region, the values whose Laplacian is the
    patch's and which equal the host on the region's rim; outside the region, the host unchanged."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    index = -np.ones(host.shape, np.intp)
    points = np.argwhere(inside)
    index[tuple(points.T)] = np.arange(len(points))
    rows, cols, values = [np.arange(len(points))], [np.arange(len(points))], [np.full(len(points), 2.0 * host.ndim)]
    rhs = np.zeros(len(points))
    for axis, step in itertools.product(range(host.ndim), (-1, 1)):
        neighbour = points.copy()
        neighbour[:, axis] += step
        valid = (neighbour[:, axis] >= 0) & (neighbour[:, axis] < host.shape[axis])
        n = tuple(np.clip(neighbour, 0, np.array(host.shape) - 1).T)
        p = tuple(points.T)
        # guidance: the patch's gradient towards each neighbour (none across the array's border)
        rhs += np.where(valid, patch[p] - patch[n], 0.0)
        interior = valid & (index[n] >= 0)
        rows.append(np.flatnonzero(interior))
        cols.append(index[n][interior])
        values.append(-np.ones(int(interior.sum())))
        rhs += np.where(valid & (index[n] < 0), host[n], 0.0)  # the rim: host values fixed
        rhs += np.where(~valid, host[p], 0.0)  # at the array's border: as if the voxel were its own rim
    matrix = coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(len(points),) * 2).tocsr()
    out = host.astype(np.float64).copy()
    out[tuple(points.T)] = spsolve(matrix, rhs)
    return out.astype(np.float32)


def smoothing(image, brain, rng, other=None):
    """Blur the region: normalised convolution over the brain, so zeros outside it do not bleed in."""
    region = _draw_region(brain, rng)
    sigma = rng.uniform(*BLUR_SIGMA_RANGE)
    pad = int(np.ceil(3 * sigma))
    outer = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in region.box)
    weights = ndimage.gaussian_filter(brain[outer].astype(np.float32), sigma)
    blurred = ndimage.gaussian_filter(image[outer] * brain[outer], sigma) / np.maximum(weights, 1e-6)
    inner = tuple(slice(s.start - o.start, s.stop - o.start) for s, o in zip(region.box, outer))
    out = image.copy()
    host = image[region.box]
    out[region.box] = host + region.alpha * (blurred[inner] - host)
    return np.clip(out, 0.0, 1.0), region.mask(image.shape)


def swelling(image, brain, rng, other=None):
    """Magnify the region about its centre (mass effect): a voxel at distance d from the centre shows
    what lay at d * (1 - scale * alpha), so the core swells and its surroundings are squeezed into
    the soft edge; the displacement reaches about SWELL_SHIFT_RANGE voxels where the edge begins."""
    region = _draw_region(brain, rng)
    scale = min(0.8, rng.uniform(*SWELL_SHIFT_RANGE) / region.radius)  # < 1: the map never folds
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in region.box], indexing="ij")).astype(np.float32)
    offset = grid - region.centre.reshape((-1,) + (1,) * image.ndim)
    source = grid - offset * (scale * region.alpha)
    moved = ndimage.map_coordinates(image, source.reshape(image.ndim, -1), order=1, mode="nearest")
    out = image.copy()
    host = image[region.box]
    out[region.box] = np.where(region.alpha > 0, moved.reshape(host.shape), host)
    return np.clip(out, 0.0, 1.0), region.mask(image.shape)


GENERATORS: dict[str, Callable] = {"bright_blob": bright_blob, "dark_blob": dark_blob,
                                   "foreign_patch": foreign_patch, "smoothing": smoothing, "swelling": swelling}


def generate(kind: str, image: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
             other: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image with one anomaly of `kind`, its bool mask); see the module docstring for the contract.

    image: (y, x) or (z, y, x) float in [0, 1]; brain: bool of the same shape; other: (image, brain)
    of another subject on the same grid (used by "foreign_patch" only). ValueError when the brain is
    too small to hold an anomaly (fewer than MIN_VOXELS voxels).
    """
    if kind not in GENERATORS:
        raise ValueError(f"unknown anomaly kind {kind!r}; one of {', '.join(KINDS)}")
    image = np.asarray(image, np.float32)
    brain = np.asarray(brain, bool)
    if image.shape != brain.shape or image.ndim not in (2, 3):
        raise ValueError(f"image {image.shape} and brain {brain.shape} must be one 2D slice or 3D volume")
    out, mask = GENERATORS[kind](image, brain, rng, other)
    return out.astype(np.float32), mask


def kind_weights(weights: dict | None) -> dict[str, float]:
    """How often sample() draws each kind: PROBABILITIES, or `weights` (kind -> relative weight, kinds
    left out never drawn) normalised. ValueError names an unknown kind or weights that are all 0."""
    if not weights:
        return dict(PROBABILITIES)
    unknown = set(weights) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown anomaly kind(s) {sorted(unknown)}; each must be one of {', '.join(KINDS)}")
    total = float(sum(weights.values()))
    if total <= 0 or any(float(w) < 0 for w in weights.values()):
        raise ValueError(f"anomaly kind weights {weights} must be >= 0 with a positive sum")
    return {k: float(weights.get(k, 0.0)) / total for k in KINDS}


def contrast_probabilities(contrast: str | None) -> dict[str, float]:
    """How often each kind is drawn for a scan of `contrast` (None or unlisted: PROBABILITIES)."""
    return dict(CONTRAST_PROBABILITIES.get((contrast or "").upper(), PROBABILITIES))


def sample(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
           other: tuple[np.ndarray, np.ndarray] | None = None,
           probabilities: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(image with one anomaly, its mask, its kind), the kind drawn with `probabilities`
    (kind_weights' output; PROBABILITIES by default)."""
    probabilities = probabilities or PROBABILITIES
    kind = str(rng.choice(KINDS, p=[probabilities[k] for k in KINDS]))
    out, mask = generate(kind, image, brain, rng, other)
    return out, mask, kind
