"""The embedded dataset: a procedural left-atrium LGE MRI phantom, deterministic from a seed.

Each patient gets an anatomy (a deformed, rotated LA ellipsoid with an appendage bump, four pulmonary-vein stubs
leaving its upper back, a mitral opening towards the LV, a wall shell, and the chest around it: LV cavity and
myocardium with epicardial fat, right atrium, aorta, spine, lungs, chest-wall muscle, subcutaneous fat, air). Each
of the patient's scans (``s1`` pre-ablation, ``s2`` post-ablation) shares that anatomy and its label map, and
differs in scar (post-ablation scans add patchy lesions around the vein ostia), contrast, bias field and noise.
With ``PhantomConfig.post_shift_vox`` > 0 each post-ablation scan (image and label) is moved by that many voxels
in a random direction against the pre-ablation scan, as a repeat acquisition would be; the default 0 keeps every
scan of a patient in register (and the dataset's bytes and cache folder as they were before the option existed).
``PhantomConfig.site`` picks the scanner profile (``phantom_sites.py``): ``B`` renders the same anatomy with
another contrast, noise level, field of view and slice thickness; the default ``A`` is the phantom as before.

Labels: 0 background, 1 LA cavity (blood pool *and* the lumen of the vein stubs, one connected component),
2 LA wall: every voxel outside the cavity within the patient's wall thickness (drawn from
``PhantomConfig.wall_thickness_mm``, measured with a distance transform in mm), plus the cavity's face
neighbours so that the shell is closed along a coarse slice axis. The shell is left open only at the mitral
orifice (a cone around the LA-to-LV axis), where blood continues into the LV as it does in real scans; vein
stubs are capped by the shell where the segmentation ends.

The anatomy is drawn to fit the field of view (not to scale): the LA keeps a realistic size and wall thickness,
the chest around it is compressed. Contrast follows an inversion-recovery LGE scan: blood moderately bright,
healthy myocardium nulled, scar and fat bright, lungs dark, air near zero (Rician noise floor).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmark.config import PhantomConfig, config_hash, to_dict
from benchmark.data import shapes
from benchmark.data.io import building, save_nifti, verified_manifest
from benchmark.data.manifest import Case, Manifest, sha256_file
from benchmark.data.phantom_sites import scan_spacing, site_profile

PHANTOM_VERSION = 1  # bump when the drawing changes, so caches of older phantoms are not reused
MONTAGE_NAME = "phantom_montage.png"

# tissue classes of the anatomy map and their LGE intensity (relative units, blood about 0.6)
AIR, SOFT, FAT, MUSCLE, LUNG, BONE, CSF, BLOOD, MYO, LA_WALL, SCAR = range(11)
INTENSITY = np.array([0.0, 0.22, 0.95, 0.20, 0.05, 0.50, 0.20, 0.62, 0.07, 0.10, 1.05], dtype=np.float32)


@dataclass(frozen=True)
class Anatomy:
    """One patient's anatomy on the native grid.

    Args:
        tissue: uint8 tissue classes (AIR..LA_WALL) without scar.
        label: uint8 0/1/2.
        opening: bool, the shell voxels left unlabelled at the mitral orifice.
        ostia: (4, 3) world points (mm) where the vein stubs leave the LA body.
        fibrosis: float32 smooth field on the grid; its top values on the wall become patchy scar.
        fibrosis_fraction: share of wall voxels that are fibrotic before ablation.
        wall_thickness_mm: the patient's wall thickness.
    """

    tissue: np.ndarray
    label: np.ndarray
    opening: np.ndarray
    ostia: np.ndarray
    fibrosis: np.ndarray
    fibrosis_fraction: float
    wall_thickness_mm: float


def _grid(cfg: PhantomConfig) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates (X, Y, Z, 3) of voxel centres (origin at the grid centre) and the affine."""
    return _grid_cached(tuple(int(v) for v in cfg.shape), scan_spacing(cfg))


@lru_cache(maxsize=4)
def _grid_cached(shape_t: tuple, spacing_t: tuple) -> tuple[np.ndarray, np.ndarray]:
    shape, spacing = np.asarray(shape_t), np.asarray(spacing_t, dtype=np.float64)
    origin = -(shape - 1) / 2.0 * spacing
    axes = [origin[i] + spacing[i] * np.arange(shape[i]) for i in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)
    pts.flags.writeable = False  # shared by every scan
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return pts, affine


def _half_fov(cfg: PhantomConfig) -> float:
    """Half the smallest field-of-view extent (mm) of site A: the unit the anatomy is drawn in at every site."""
    return float(min(np.asarray(cfg.shape) * np.asarray(cfg.spacing, dtype=np.float64))) / 2.0


def _paint_chest(pts: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    """Body, chest wall, lungs, spine and descending aorta (x: right->left, y: anterior->posterior)."""
    x, y = pts[:, :, 0, 0] / s, pts[:, :, 0, 1] / s  # the chest is drawn in-plane and extruded along z
    j = rng.uniform(-0.04, 0.04, 4)
    plane = np.zeros(x.shape, dtype=np.uint8)

    def ellipse(cx, cy, ax_, ay_):
        return ((x - cx) / ax_) ** 2 + ((y - cy) / ay_) ** 2 < 1.0

    inner = ellipse(0, 0.04, 0.80 + j[0], 0.63 + j[1])
    plane[ellipse(0, 0.04, 0.97 + j[0], 0.80 + j[1])] = FAT
    plane[ellipse(0, 0.04, 0.88 + j[0], 0.71 + j[1])] = MUSCLE
    plane[inner] = SOFT
    for side in (-1, 1):
        plane[ellipse(side * (0.58 + j[2]), 0.10, 0.26, 0.50) & inner] = LUNG
    plane[ellipse(0.0, 0.68, 0.20, 0.16)] = MUSCLE  # paraspinal muscle around the vertebra
    plane[ellipse(0.0, 0.64, 0.13, 0.11)] = BONE
    plane[ellipse(0.0, 0.77, 0.05, 0.04)] = CSF
    plane[ellipse(-0.26 + j[3], 0.50, 0.10, 0.10)] = BLOOD  # descending aorta
    return np.repeat(plane[:, :, None], pts.shape[2], axis=2)


def _la_shape(s: float, rng: np.random.Generator):
    centre = np.array([0.0, 0.16 * s, 0.08 * s]) + rng.uniform(-0.04, 0.04, 3) * s
    radii = np.array([0.47, 0.36, 0.40]) * s * rng.uniform(0.9, 1.1, 3)
    rot = shapes.rotation(rng, 15.0)
    bumps = [(shapes.unit([0.55, -0.6, 0.55]), rng.uniform(0.2, 0.32), 0.05)]  # the appendage
    bumps += [(shapes.unit(rng.standard_normal(3)), rng.uniform(-0.12, 0.12), rng.uniform(0.2, 0.5)) for _ in range(4)]
    return centre, radii, rot, bumps


def _veins(s: float, rng: np.random.Generator, inside, centre: np.ndarray):
    """Four stubs leaving the upper back of the LA (left/right, superior/inferior) towards the lungs."""
    out = []
    for side in (1.0, -1.0):
        for up in (0.45, 0.0):
            d = shapes.unit(np.array([0.75 * side, 0.55, up]) + rng.uniform(-0.12, 0.12, 3))
            t_exit = shapes.ray_exit(inside, centre, d)
            out.append((d, t_exit, rng.uniform(0.08, 0.11) * s, rng.uniform(0.22, 0.32) * s))
    return out


def _paint_heart(tissue: np.ndarray, pts: np.ndarray, s: float, centre, mitral, reach: float) -> None:
    """LV along the mitral axis (``reach`` mm past the LA centre), right atrium, ascending aorta, mitral inflow;
    painted before the LA so the LA stays on top."""
    lv_len, lv_short, lv_myo = 0.30 * s, 0.17 * s, 0.10 * s
    lv_centre = centre + mitral * (reach + 0.75 * (lv_len + lv_myo))
    frame = shapes.frame(mitral)
    lv_outer = np.array([lv_short + lv_myo, lv_short + lv_myo, lv_len + lv_myo])
    shapes.fill(tissue, pts, FAT, "ellipsoid", lv_centre, lv_outer + 0.05 * s, frame, where=tissue != AIR)
    shapes.fill(tissue, pts, MYO, "ellipsoid", lv_centre, lv_outer, frame)
    shapes.fill(tissue, pts, BLOOD, "ellipsoid", lv_centre, [lv_short, lv_short, lv_len], frame)
    ra_centre = centre + np.array([-0.62, -0.30, -0.12]) * s
    shapes.fill(tissue, pts, MYO, "ellipsoid", ra_centre, np.array([0.24, 0.22, 0.30]) * s)
    shapes.fill(tissue, pts, BLOOD, "ellipsoid", ra_centre, np.array([0.20, 0.18, 0.26]) * s)
    top, bottom = centre + np.array([-0.2, -0.45, -0.2]) * s, centre + np.array([-0.2, -0.2, 1.2]) * s
    shapes.fill(tissue, pts, BLOOD, "capsule", top, bottom, 0.11 * s)  # ascending aorta
    shapes.fill(tissue, pts, BLOOD, "capsule", centre, lv_centre, 0.16 * s)  # mitral inflow through the opening


def wall_shell(cavity: np.ndarray, spacing, thickness_mm: float, reach_mm: float | None = None):
    """The wall shell around a cavity mask: voxels outside it within ``thickness_mm`` (Euclidean distance in mm,
    anisotropic spacing respected), plus its face neighbours so the shell stays closed along an axis whose
    spacing exceeds the thickness.

    Args:
        cavity: bool mask (not empty).
        spacing: voxel size in mm.
        thickness_mm: shell thickness.
        reach_mm: distances are exact up to this far from the cavity (default ``thickness_mm``), inf beyond.

    Returns:
        (shell mask, distance in mm from the cavity).
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    reach = max(thickness_mm, reach_mm or 0.0)
    # work in the cavity's bounding box plus the reach: a small LA in a large scan costs little
    pad = np.ceil(reach / spacing).astype(int) + 1
    idx = np.argwhere(cavity)
    lo, hi = np.maximum(idx.min(axis=0) - pad, 0), np.minimum(idx.max(axis=0) + pad + 1, cavity.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = cavity[box]
    dist = np.full(cavity.shape, np.inf)
    dist[box] = ndimage.distance_transform_edt(~sub, sampling=tuple(spacing))
    shell = np.zeros(cavity.shape, dtype=bool)
    face = ndimage.binary_dilation(sub, structure=ndimage.generate_binary_structure(3, 1))
    shell[box] = ((dist[box] > 0) & (dist[box] <= thickness_mm)) | (face & ~sub)
    return shell, dist


def make_anatomy(cfg: PhantomConfig, rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy and label map.

    Args:
        cfg: grid, spacing and wall thickness range.
        rng: the patient's generator (every draw comes from it).

    Returns:
        ``Anatomy`` (tissue classes, labels 0/1/2, the mitral opening, vein ostia, fibrosis field).
    """
    spacing = scan_spacing(cfg)
    pts, _ = _grid(cfg)
    s = _half_fov(cfg)
    tissue = _paint_chest(pts, s, rng)
    centre, radii, rot, bumps = _la_shape(s, rng)

    def la_inside(p):
        return shapes.ellipsoid(p, centre, radii, rot, bumps)

    veins = _veins(s, rng, la_inside, centre)
    mitral = shapes.unit(np.array([0.35, -0.75, -0.55]) + rng.uniform(-0.1, 0.1, 3))
    thickness = float(rng.uniform(*cfg.wall_thickness_mm))

    _paint_heart(tissue, pts, s, centre, mitral, shapes.ray_exit(la_inside, centre, mitral) + thickness)
    cavity = shapes.fill(tissue, pts, -1, "ellipsoid", centre, radii, rot, bumps=bumps)
    ostia = []
    for d, t_exit, r, length in veins:
        cavity |= shapes.fill(tissue, pts, -1, "capsule", centre + d * 0.5 * t_exit, centre + d * (t_exit + length), r)
        ostia.append(centre + d * t_exit)
    shell, dist = wall_shell(cavity, spacing, thickness, reach_mm=thickness + 3.0)
    rel = pts - centre
    cos_angle = (rel @ mitral.astype(np.float32)) / np.maximum(shapes.norm(rel), 1e-9)
    opening = shell & (cos_angle > np.cos(np.deg2rad(28.0)))
    wall = shell & ~opening
    fat = (dist > thickness) & (dist <= thickness + 3.0) & (tissue == SOFT)
    tissue[fat & (shapes.smooth_noise(rng, tissue.shape, spacing, 3.0) > 0.2)] = FAT  # patchy epicardial fat
    tissue[wall] = LA_WALL
    tissue[cavity] = BLOOD
    label = np.zeros(tissue.shape, dtype=np.uint8)
    label[cavity] = 1
    label[wall] = 2
    return Anatomy(
        tissue=tissue,
        label=label,
        opening=opening,
        ostia=np.asarray(ostia),
        fibrosis=shapes.smooth_noise(rng, tissue.shape, spacing, 4.0),
        fibrosis_fraction=float(rng.uniform(0.03, 0.25)),
        wall_thickness_mm=thickness,
    )


def scar_mask(anat: Anatomy, cfg: PhantomConfig, rng: np.random.Generator, post_ablation: bool) -> np.ndarray:
    """Patchy enhancement on the wall: the patient's fibrosis (jittered per scan) plus, after ablation, gappy
    lesions around the vein ostia."""
    spacing = scan_spacing(cfg)
    wall = anat.label == 2
    field = anat.fibrosis + 0.35 * shapes.smooth_noise(rng, wall.shape, spacing, 3.0)
    scar = wall & (field > np.quantile(field[wall], 1.0 - anat.fibrosis_fraction))
    if post_ablation:
        pts, _ = _grid(cfg)
        scale = _half_fov(cfg)
        near = np.zeros(wall.shape, dtype=bool)
        for ostium in anat.ostia:
            near |= shapes.fill(near, pts, -1, "ellipsoid", ostium, [rng.uniform(0.15, 0.22) * scale] * 3)
        gaps = shapes.smooth_noise(rng, wall.shape, spacing, 2.5) > -0.6
        scar |= wall & near & gaps
    return scar


def render_scan(anat: Anatomy, cfg: PhantomConfig, rng: np.random.Generator, post_ablation: bool) -> np.ndarray:
    """One LGE scan of an anatomy: contrast, scar, texture, partial-volume blur, bias field, Rician noise.

    Args:
        anat: the patient's anatomy.
        cfg: phantom settings (``noise_sigma`` relative to the blood intensity).
        rng: the scan's generator.
        post_ablation: add ablation lesions around the vein ostia.

    Returns:
        float32 (X, Y, Z) magnitude image in arbitrary scanner units.
    """
    spacing, site = scan_spacing(cfg), site_profile(cfg)
    table = INTENSITY if site.intensity is None else np.asarray(site.intensity, dtype=np.float32)
    contrast = table * rng.uniform(0.9, 1.1, INTENSITY.shape).astype(np.float32)
    contrast[AIR] = 0.0
    image = contrast[anat.tissue]
    image[scar_mask(anat, cfg, rng, post_ablation)] = contrast[SCAR]
    image *= 1.0 + 0.06 * shapes.smooth_noise(rng, image.shape, spacing, 2.0)
    psf = [mm / sp for mm, sp in zip(site.psf_mm, spacing, strict=True)]
    image = ndimage.gaussian_filter(image, sigma=psf)  # partial volume
    pts, _ = _grid(cfg)
    s = float(np.abs(pts).max())
    u = pts / s
    # smooth multiplicative field: random quadratic polynomial in the normalised coordinates
    terms = np.concatenate([u, u**2 - 1.0 / 3.0, u[..., [0, 0, 1]] * u[..., [1, 2, 2]]], axis=-1)
    coef = np.concatenate([rng.uniform(-0.25, 0.25, 3), rng.uniform(-0.15, 0.15, 6)]).astype(np.float32)
    bias = np.exp(terms @ coef)
    gain = rng.uniform(300.0, 600.0)
    clean = (image * bias * gain).astype(np.float32)
    sigma = cfg.noise_sigma * site.noise_scale * contrast[BLOOD] * gain
    real = clean + sigma * rng.standard_normal(clean.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(clean.shape, dtype=np.float32)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


# options added after version 1, left out of the cache hash at their default so existing caches stay valid
_ADDED_DEFAULTS = {"post_shift_vox": 0.0, "site": "A"}


def phantom_dir(cfg: PhantomConfig, out_dir: str | Path) -> Path:
    """The cache folder of a phantom config: ``<out_dir>/phantom_v<version>_<config hash>``."""
    settings = {k: v for k, v in to_dict(cfg).items() if _ADDED_DEFAULTS.get(k, object()) != v}
    return Path(out_dir) / f"phantom_v{PHANTOM_VERSION}_{config_hash(settings)}"


def shift_scan(image: np.ndarray, label: np.ndarray, shift) -> tuple[np.ndarray, np.ndarray]:
    """Move a scan and its label map by ``shift`` voxels (sub-voxel shifts resample each label's mask linearly).

    Args:
        image: float32 (X, Y, Z); voxels moved in from outside repeat the border.
        label: uint8 0/1/2; voxels moved in from outside are background.
        shift: (3,) voxels.

    Returns:
        (image, label) on the same grid.
    """
    moved = ndimage.shift(image, shift, order=1, mode="nearest").astype(np.float32)
    masks = [ndimage.shift((label == v).astype(np.float32), shift, order=1, cval=float(v == 0)) for v in range(3)]
    return moved, np.argmax(np.stack(masks), axis=0).astype(np.uint8)


def _post_shift(cfg: PhantomConfig, patient: int, scan: int) -> np.ndarray:
    """The shift (voxels) of one scan: ``post_shift_vox`` long, in a direction from its own generator."""
    rng = np.random.default_rng([cfg.seed, patient, scan, 1])  # apart from the scan's drawing generator
    return cfg.post_shift_vox * shapes.unit(rng.standard_normal(3))


def _write_cases(cfg: PhantomConfig, root: Path) -> tuple[list[Case], list[tuple]]:
    _, affine = _grid(cfg)
    cases, samples = [], []
    lo, hi = cfg.scans_per_patient
    for p in range(cfg.n_patients):
        prng = np.random.default_rng([cfg.seed, p])
        anat = make_anatomy(cfg, prng)
        for k in range(int(prng.integers(lo, hi + 1))):
            case_id, patient_id = f"ph{p:04d}_s{k + 1}", f"ph{p:04d}"
            image = render_scan(anat, cfg, np.random.default_rng([cfg.seed, p, k + 1]), post_ablation=k > 0)
            label = anat.label
            if k > 0 and cfg.post_shift_vox > 0:
                image, label = shift_scan(image, label, _post_shift(cfg, p, k + 1))
            img_path = save_nifti(root / "images" / f"{case_id}.nii.gz", image, affine)
            lab_path = save_nifti(root / "labels" / f"{case_id}.nii.gz", label, affine)
            cases.append(
                Case(
                    case_id=case_id,
                    patient_id=patient_id,
                    image=f"images/{case_id}.nii.gz",
                    label=f"labels/{case_id}.nii.gz",
                    shape=tuple(int(v) for v in image.shape),
                    spacing=scan_spacing(cfg),
                    sha256_image=sha256_file(img_path),
                    sha256_label=sha256_file(lab_path),
                    source=f"phantom seed={cfg.seed} patient={p} scan={k + 1}",
                )
            )
            if len(samples) < 6 and k == 0:
                samples.append((case_id, image, anat.label))
    return cases, samples


def generate_phantom(cfg: PhantomConfig, out_dir: str | Path) -> Manifest:
    """Generate (or reuse) the phantom dataset in the internal layout.

    Writes ``images/<case>.nii.gz``, ``labels/<case>.nii.gz``, ``manifest.json`` and ``phantom_montage.png``
    into ``phantom_dir(cfg, out_dir)``. A cache whose files all match their checksums is returned as is; a new
    one is built in a temp folder and renamed into place, so an interrupted run leaves nothing partial.

    Args:
        cfg: the phantom section of the data config.
        out_dir: the cache folder (``data.cache_dir``).

    Returns:
        The dataset's ``Manifest``; case ids ``ph0003_s1``, patient ids ``ph0003``.
    """
    from benchmark.viz import save_montage

    final = phantom_dir(cfg, out_dir)
    cached = verified_manifest(final)
    if cached is not None:
        return cached
    start = time.perf_counter()
    with building(final) as tmp:
        cases, samples = _write_cases(cfg, tmp)
        images, labels = [s[1] for s in samples], [s[2] for s in samples]
        Manifest(root=tmp, dataset="phantom", cases=tuple(cases)).save()
        save_montage(
            tmp / MONTAGE_NAME,
            [("LGE", images), ("LGE + label", images), ("LGE + label", images), ("LGE + label", images)],
            labels=[[None] * len(images), labels, labels, labels],
            titles=[s[0] for s in samples],
            axes=[2, 2, 0, 1],
            spacing=scan_spacing(cfg),
        )
        (tmp / "timing.txt").write_text(f"generated {len(cases)} scans in {time.perf_counter() - start:.2f} s\n")
    return Manifest.load(final)
