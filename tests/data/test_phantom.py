from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from benchmark.config import PhantomConfig
from benchmark.data import phantom
from benchmark.data.io import load_label, load_volume
from benchmark.data.manifest import sha256_file
from benchmark.data.phantom import (
    AIR,
    BLOOD,
    FAT,
    LUNG,
    MYO,
    SCAR,
    generate_phantom,
    make_anatomy,
    phantom_dir,
    render_scan,
    scar_mask,
)

TINY = PhantomConfig(n_patients=3, scans_per_patient=(2, 2), shape=(32, 32, 16))
DEFAULT = PhantomConfig()


def _files(man) -> dict[str, tuple[str, str]]:
    return {c.case_id: (sha256_file(man.path(c, "image")), sha256_file(man.path(c, "label"))) for c in man.cases}


def test_same_seed_same_bytes_different_seed_different_anatomy(tmp_path):
    a = generate_phantom(TINY, tmp_path / "a")
    b = generate_phantom(TINY, tmp_path / "b")
    assert _files(a) == _files(b)
    other = generate_phantom(PhantomConfig(**{**TINY.__dict__, "seed": 1}), tmp_path / "c")
    labels_a = {c.case_id: c.sha256_label for c in a.cases}
    assert all(labels_a[c.case_id] != c.sha256_label for c in other.cases)
    la = load_label(a.path(a.cases[0], "label")).array
    lc = load_label(other.path(other.cases[0], "label")).array
    assert np.mean(la != lc) > 0.005  # a different anatomy, not a few flipped voxels


def test_layout_ids_geometry_and_montage(tmp_path):
    man = generate_phantom(TINY, tmp_path)
    assert man.root == phantom_dir(TINY, tmp_path)
    assert sorted(c.case_id for c in man.cases) == [f"ph000{p}_s{k}" for p in range(3) for k in (1, 2)]
    assert man.patients() == {f"ph000{p}": [f"ph000{p}_s1", f"ph000{p}_s2"] for p in range(3)}
    vol = load_volume(man.path(man.cases[0], "image"))
    assert vol.array.shape == (32, 32, 16) and man.cases[0].shape == (32, 32, 16)
    np.testing.assert_allclose(np.diag(vol.affine)[:3], TINY.spacing)
    np.testing.assert_allclose(vol.affine[:3, 3], -(np.array([32, 32, 16]) - 1) / 2 * np.array(TINY.spacing))
    assert (man.root / phantom.MONTAGE_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scans_of_a_patient_share_anatomy_but_not_image(tmp_path):
    man = generate_phantom(TINY, tmp_path)
    by_id = man.by_id()
    for patient, case_ids in man.patients().items():
        first, second = (by_id[c] for c in case_ids)
        assert first.sha256_label == second.sha256_label, patient
        assert first.sha256_image != second.sha256_image, patient
        diff = load_volume(man.path(first, "image")).array - load_volume(man.path(second, "image")).array
        assert np.abs(diff).mean() > 1.0


@pytest.mark.parametrize("patient", range(4))
def test_labels_cavity_connected_and_enclosed_by_wall(patient):
    anat = make_anatomy(DEFAULT, np.random.default_rng([7, patient]))
    cavity, wall = anat.label == 1, anat.label == 2
    assert ndimage.label(cavity)[1] == 1  # blood pool + vein lumens: one face-connected component
    assert 0.03 <= cavity.mean() <= 0.08
    dist = ndimage.distance_transform_edt(~cavity, sampling=DEFAULT.spacing)
    t_min, t_max = DEFAULT.wall_thickness_mm
    assert dist[wall].max() <= t_max + 1e-6  # no wall voxel beyond the thickest allowed wall
    within_min = (dist > 0) & (dist <= t_min)
    assert np.all(wall[within_min & ~anat.opening])  # the wall is at least t_min thick everywhere but the orifice
    exposed = ndimage.binary_dilation(cavity) & ~cavity & ~wall
    assert exposed.any() and np.all(anat.opening[exposed])  # the cavity meets background only at the orifice
    assert anat.opening.sum() < 0.1 * (wall | anat.opening).sum()
    for axis in range(3):
        assert not np.take(anat.label, [0, -1], axis=axis).any()  # nothing touches the field-of-view border


def test_post_ablation_scan_adds_scar_around_the_veins():
    anat = make_anatomy(DEFAULT, np.random.default_rng([7, 0]))
    pre = scar_mask(anat, DEFAULT, np.random.default_rng(5), post_ablation=False)
    post = scar_mask(anat, DEFAULT, np.random.default_rng(5), post_ablation=True)
    assert np.all(post[pre]) and post.sum() > pre.sum() + 20
    assert np.all(anat.label[post] == 2)  # enhancement only on the wall


def test_lge_contrast_ordering():
    anat = make_anatomy(DEFAULT, np.random.default_rng([7, 1]))
    image = render_scan(anat, DEFAULT, np.random.default_rng(3), post_ablation=True)
    scar = scar_mask(anat, DEFAULT, np.random.default_rng(3), post_ablation=True)
    inner = {t: ndimage.binary_erosion(anat.tissue == t, iterations=1) for t in (AIR, LUNG, MYO, BLOOD, FAT)}
    med = {t: float(np.median(image[m])) for t, m in inner.items()}
    assert med[AIR] < med[LUNG] < med[MYO] < med[BLOOD] < med[FAT]
    assert np.median(image[scar]) > np.median(image[anat.label == 2][~scar[anat.label == 2]])
    assert SCAR > BLOOD and np.isfinite(image).all() and image.min() >= 0.0  # Rician magnitude is non-negative


def test_cache_is_reused_then_rebuilt_when_damaged(tmp_path):
    first = generate_phantom(TINY, tmp_path)
    stamp = {p: p.stat().st_mtime_ns for p in first.root.rglob("*")}
    again = generate_phantom(TINY, tmp_path)
    assert again.root == first.root and {p: p.stat().st_mtime_ns for p in again.root.rglob("*")} == stamp
    victim = first.path(first.cases[0], "image")
    victim.unlink()
    with pytest.warns(UserWarning, match="stale cache is rebuilt"):
        rebuilt = generate_phantom(TINY, tmp_path)
    assert sha256_file(victim) == first.cases[0].sha256_image
    assert [p.name for p in tmp_path.iterdir()] == [rebuilt.root.name]


def test_interrupted_generation_leaves_no_cache(tmp_path, monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return render_scan(*args, **kwargs)

    monkeypatch.setattr(phantom, "render_scan", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_phantom(TINY, tmp_path)
    assert list(tmp_path.iterdir()) == []
