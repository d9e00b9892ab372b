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
- intensities stay in [0, 1]; with clip=False they may leave it (an enhancing rim brighter than the
  scan's brightest tissue), for a caller that normalises the scan after planting (synth_contrast.normalise),
  as preprocessing normalises a real scan with its lesion in it: a bright tumour moves the brain's top
  percentile and darkens every healthy tissue, which a lesion clipped to the healthy range never shows.

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
  that structures are pushed out by about SWELL_SHIFT_RANGE voxels at the rim of its core;
- "tumour": a glioma-sized region (semi-axes TUMOUR_RADIUS_VOXELS, 12-36 mm: 7 to 200 mL as an ellipsoid,
  the size of the tumours a clinician loads, which the other kinds never reach) in three nested
  compartments, oedema outside, solid tumour within, a necrotic core in most, each changed as it looks in
  the scan's contrast (TUMOUR_LOOKS: on T1c a bright enhancing rim round a dark core in darker oedema; on
  T2 and FLAIR bright oedema; drawn at random for an unknown contrast), often with mass effect.

Every kind stays fast on a 96 x 96 slice (about a millisecond or two): Perlin noise and filters are
computed on the anomaly's bounding box only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from scipy import ndimage

KINDS = ("bright_blob", "dark_blob", "foreign_patch", "smoothing", "swelling", "tumour")
# How often sample() picks each kind by default: intensity blobs are what most lesions look like, the
# others teach the segmenter that texture, context and shape can be abnormal too. The models trained before
# the tumour kind existed drew this mix (their configs name no kinds), so it stays as it was.
PROBABILITIES = {"bright_blob": 0.3, "dark_blob": 0.25, "foreign_patch": 0.2, "smoothing": 0.1, "swelling": 0.15,
                 "tumour": 0.0}
# On T2 and FLAIR, the lesions a clinician looks for (MS plaques, oedema, tumour, infarcts, white-matter
# hyper-intensities) are bright: there the kinds are drawn mostly as bright blobs. The bright-lesion models
# train on this mix (their configs' `synthetic.kinds`) and the synthetic validation plants it in those two
# contrasts (SYNTHETIC_VALIDATION_VERSION 4). On T1 and T1c lesions go either way (black holes, necrosis;
# enhancement, blood), so they keep PROBABILITIES.
BRIGHT_LESION_PROBABILITIES = {"bright_blob": 0.5, "dark_blob": 0.1, "foreign_patch": 0.2, "smoothing": 0.05,
                               "swelling": 0.15, "tumour": 0.0}
# The synthetic validation (SYNTHETIC_VALIDATION_VERSION 6) also plants tumours, in every contrast: a product
# that promises to find gliomas must be chosen on anomalies of their size. TUMOUR_SHARE of the draws, the
# other kinds in their mix as before.
TUMOUR_SHARE = 0.15
TUMOUR = "tumour"


def with_tumours(probabilities: dict[str, float], share: float = TUMOUR_SHARE) -> dict[str, float]:
    """The mix with `share` of tumours and the other kinds scaled to the rest."""
    rest = {k: p for k, p in probabilities.items() if k != TUMOUR}
    total = sum(rest.values())
    return {**{k: (1.0 - share) * p / total for k, p in rest.items()}, TUMOUR: share}


VALIDATION_PROBABILITIES = with_tumours(PROBABILITIES)
_BRIGHT_VALIDATION = with_tumours(BRIGHT_LESION_PROBABILITIES)
CONTRAST_PROBABILITIES = {"T2": _BRIGHT_VALIDATION, "FLAIR": _BRIGHT_VALIDATION}

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
TUMOUR_RADIUS_VOXELS = (6.0, 18.0)  # 12-36 mm on the model grid
# A tumour's compartments as fractions of its radius: the solid tumour within SOLID_FRACTION of it, the
# necrotic core (drawn with NECROSIS_PROB) within NECROSIS_FRACTION of the solid part, each fading in
# over COMPARTMENT_EDGE
SOLID_FRACTION = (0.35, 0.75)
NECROSIS_FRACTION = (0.3, 0.7)
NECROSIS_PROB = 0.6
COMPARTMENT_EDGE = 0.1
MASS_EFFECT_PROB = 0.5
# Per contrast, the range of each compartment's intensity change (model intensities): enhancement is bright
# only on T1c, oedema dark on T1 and T1c and bright on T2 and FLAIR, necrosis fluid (dark on T1, T1c and,
# suppressed, mostly on FLAIR; bright on T2). A contrast not listed draws each change in RANDOM_LOOK.
TUMOUR_LOOKS = {
    "T1": {"oedema": (-0.2, -0.05), "solid": (-0.25, -0.05), "necrosis": (-0.5, -0.2)},
    "T1C": {"oedema": (-0.2, -0.05), "solid": (0.2, 0.5), "necrosis": (-0.5, -0.2)},
    "T2": {"oedema": (0.2, 0.45), "solid": (0.1, 0.35), "necrosis": (0.3, 0.6)},
    "FLAIR": {"oedema": (0.2, 0.45), "solid": (0.1, 0.35), "necrosis": (-0.3, 0.1)},
}
RANDOM_LOOK = (-0.5, 0.5)
_MAX_ATTEMPTS = 20


def max_voxels(ndim: int) -> int:
    """The largest mask a generator returns: the ellipse/ellipsoid of the largest radius (a tumour's) grown
    by the largest roughness (the documented size range's upper end)."""
    r = max(RADIUS_VOXELS[1], TUMOUR_RADIUS_VOXELS[1]) * (1.0 + ROUGHNESS[1]) + 1.0
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
    falling to 0 over the edge) inside it, its centre and radius, and each voxel's depth (its distance
    from the centre as a fraction of the roughened rim's: 0 at the centre, 1 on the rim)."""

    def __init__(self, box: tuple[slice, ...], alpha: np.ndarray, centre: np.ndarray, radius: float,
                 depth: np.ndarray):
        self.box, self.alpha, self.centre, self.radius, self.depth = box, alpha, centre, radius, depth

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        full = np.zeros(shape, bool)
        full[self.box] = self.alpha > 0
        return full


def _random_rotation(ndim: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    return q * np.sign(np.diag(r))


def _draw_region(brain: np.ndarray, rng: np.random.Generator, allowed: np.ndarray | None = None,
                 radius_range: tuple[float, float] = RADIUS_VOXELS) -> _Region:
    """A Perlin-roughened ellipse (semi-axes log-uniform in radius_range) inside the brain (and inside
    `allowed` where given), centred on a brain voxel at least 2 voxels from the brain's edge; a new draw
    when too little of it is brain."""
    inside = brain if allowed is None else brain & allowed
    core = ndimage.binary_erosion(inside, iterations=2)
    candidates = np.argwhere(core if core.sum() >= MIN_VOXELS else inside)
    if len(candidates) < MIN_VOXELS:
        raise ValueError(f"the brain holds {int(inside.sum())} voxels here; an anomaly needs at least {MIN_VOXELS}")
    for _ in range(_MAX_ATTEMPTS):
        region = _ellipse_at(candidates[rng.integers(len(candidates))], brain.shape, inside, rng, radius_range)
        if (region.alpha > 0).sum() >= MIN_VOXELS:
            return region
    raise ValueError("no anomaly of the minimum size fits inside this brain")


def _ellipse_at(centre: np.ndarray, shape: tuple[int, ...], inside: np.ndarray, rng: np.random.Generator,
                radius_range: tuple[float, float]) -> _Region:
    ndim = len(shape)
    radii = np.exp(rng.uniform(*np.log(radius_range), size=ndim))
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
    return _Region(box, alpha.astype(np.float32), centre, float(radii.mean()), (distance / boundary).astype(np.float32))


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
    out[region.box] = image[region.box] + sign * region.alpha * delta * (1.0 + texture)
    return out


def bright_blob(image, brain, rng, other=None, contrast=None):
    region = _draw_region(brain, rng)
    return _blob(image, region, rng, +1.0), region.mask(image.shape)


def dark_blob(image, brain, rng, other=None, contrast=None):
    region = _draw_region(brain, rng)
    return _blob(image, region, rng, -1.0), region.mask(image.shape)


def foreign_patch(image, brain, rng, other=None, contrast=None):
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
        out[region.box] = poisson_blend(host, patch, region.alpha > 0)
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


def smoothing(image, brain, rng, other=None, contrast=None):
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
    return out, region.mask(image.shape)


def swelling(image, brain, rng, other=None, contrast=None):
    """Magnify the region about its centre (mass effect): a voxel at distance d from the centre shows
    what lay at d * (1 - scale * alpha), so the core swells and its surroundings are squeezed into
    the soft edge; the displacement reaches about SWELL_SHIFT_RANGE voxels where the edge begins."""
    region = _draw_region(brain, rng)
    return _swell(image, region, rng), region.mask(image.shape)


def _swell(image: np.ndarray, region: _Region, rng: np.random.Generator) -> np.ndarray:
    """The image with the region magnified about its centre (changed only where alpha > 0)."""
    scale = min(0.8, rng.uniform(*SWELL_SHIFT_RANGE) / region.radius)  # < 1: the map never folds
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in region.box], indexing="ij")).astype(np.float32)
    offset = grid - region.centre.reshape((-1,) + (1,) * image.ndim)
    source = grid - offset * (scale * region.alpha)
    moved = ndimage.map_coordinates(image, source.reshape(image.ndim, -1), order=1, mode="nearest")
    out = image.copy()
    host = image[region.box]
    out[region.box] = np.where(region.alpha > 0, moved.reshape(host.shape), host)
    return out


def tumour(image, brain, rng, other=None, contrast=None):
    """A glioma: oedema, solid tumour and (often) a necrotic core, nested, each changed as it looks in
    `contrast` (TUMOUR_LOOKS), textured, after a mass effect half the time."""
    region = _draw_region(brain, rng, radius_range=TUMOUR_RADIUS_VOXELS)
    look = TUMOUR_LOOKS.get((contrast or "").upper())
    shift = {part: rng.uniform(*(look[part] if look else RANDOM_LOOK)) for part in ("oedema", "solid", "necrosis")}
    solid = rng.uniform(*SOLID_FRACTION)
    necrosis = solid * rng.uniform(*NECROSIS_FRACTION) if rng.random() < NECROSIS_PROB else 0.0
    inner = lambda fraction: np.clip((fraction - region.depth) / COMPARTMENT_EDGE, 0.0, 1.0)  # noqa: E731
    change = (shift["oedema"] + inner(solid) * (shift["solid"] - shift["oedema"])
              + inner(necrosis) * (shift["necrosis"] - shift["solid"]))
    texture = TEXTURE_AMPLITUDE * np.clip(fractal_perlin(region.alpha.shape, 2.0, rng), -1.0, 1.0)
    host = _swell(image, region, rng) if rng.random() < MASS_EFFECT_PROB else image
    out = image.copy()
    out[region.box] = np.where(region.alpha > 0, host[region.box] + region.alpha * change * (1.0 + texture),
                               image[region.box])
    return out, region.mask(image.shape)


GENERATORS: dict[str, Callable] = {"bright_blob": bright_blob, "dark_blob": dark_blob,
                                   "foreign_patch": foreign_patch, "smoothing": smoothing, "swelling": swelling,
                                   "tumour": tumour}


def generate(kind: str, image: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
             other: tuple[np.ndarray, np.ndarray] | None = None,
             contrast: str | None = None, clip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(image with one anomaly of `kind`, its bool mask); see the module docstring for the contract.

    image: (y, x) or (z, y, x) float in [0, 1]; brain: bool of the same shape; other: (image, brain)
    of another subject on the same grid (used by "foreign_patch" only); contrast: the image's (used by
    "tumour" only; None: unknown); clip: intensities clipped to [0, 1] (False: left for
    synth_contrast.normalise).
    ValueError when the brain is too small to hold an anomaly (fewer than MIN_VOXELS voxels).
    """
    if kind not in GENERATORS:
        raise ValueError(f"unknown anomaly kind {kind!r}; one of {', '.join(KINDS)}")
    image = np.asarray(image, np.float32)
    brain = np.asarray(brain, bool)
    if image.shape != brain.shape or image.ndim not in (2, 3):
        raise ValueError(f"image {image.shape} and brain {brain.shape} must be one 2D slice or 3D volume")
    out, mask = GENERATORS[kind](image, brain, rng, other, contrast)
    return (np.clip(out, 0.0, 1.0) if clip else out).astype(np.float32), mask


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
    """How often the synthetic validation draws each kind for a scan of `contrast` (None or unlisted:
    VALIDATION_PROBABILITIES)."""
    return dict(CONTRAST_PROBABILITIES.get((contrast or "").upper(), VALIDATION_PROBABILITIES))


def sample(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
           other: tuple[np.ndarray, np.ndarray] | None = None,
           probabilities: dict[str, float] | None = None,
           contrast: str | None = None, clip: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """(image with one anomaly, its mask, its kind), the kind drawn with `probabilities`
    (kind_weights' output; PROBABILITIES by default), in the image's `contrast` (None: unknown); clip as
    generate's."""
    probabilities = probabilities or PROBABILITIES
    kind = str(rng.choice(KINDS, p=[probabilities.get(k, 0.0) for k in KINDS]))
    out, mask = generate(kind, image, brain, rng, other, contrast, clip)
    return out, mask, kind
