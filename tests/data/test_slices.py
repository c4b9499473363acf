"""The preprocessing protocol, splits, the cache and the torch dataset."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from hcmbench import HcmbenchError
from hcmbench.config import DataConfig
from hcmbench.data import slices as slices_module
from hcmbench.data.acdc import GROUPS, LABEL_LV, LABEL_MYO, LABEL_RV, open_dataset
from hcmbench.data.dataset import SliceDataset
from hcmbench.data.slices import crop_field_of_view, load_slices, normalise_volume, split_patients

ALL = DataConfig(groups=GROUPS, size=32)


@pytest.fixture
def all_slices(phantom_root):
    return load_slices(phantom_root, ALL)


def test_slices_are_in_range_with_the_requested_shape(all_slices):
    assert all_slices.images.dtype == np.float32
    assert all_slices.images.shape[1:] == (32, 32) and len(all_slices) > 0
    assert all_slices.images.min() >= 0.0 and all_slices.images.max() <= 1.0
    assert all_slices.images.max() > 0.9  # each volume is scaled so its 99.5th percentile reaches 1
    assert set(all_slices.phase.tolist()) == {"ED", "ES"}
    assert set(all_slices.group.tolist()) == set(GROUPS)


def test_every_kept_slice_shows_myocardium_centred_in_the_crop(all_slices):
    assert all_slices.has_mask.all()
    for mask in all_slices.masks:
        assert (mask == 2).any()
        centroid = np.array(ndimage.center_of_mass(mask > 0))
        assert np.abs(centroid - 15.5).max() < 2.0


def test_slices_without_myocardium_are_dropped(phantom_copy):
    """Every phantom slice shows myocardium, so one patient's ED mask is edited: a slice above the heart
    (no label at all) and one that shows the cavities but no myocardium are left out, the rest kept."""
    patient = open_dataset(phantom_copy).select(["DCM"])[0]
    path = patient.mask_path(patient.info.ed)
    stored = nib.load(str(path))
    mask = np.asanyarray(stored.dataobj).copy()
    n_slices = mask.shape[2]
    assert all((mask[:, :, k] == LABEL_MYO).any() for k in range(n_slices))
    mask[:, :, 0] = 0
    cavities_only = mask[:, :, 1]  # a view: edits the mask
    cavities_only[cavities_only == LABEL_MYO] = 0
    assert np.isin(cavities_only, (LABEL_RV, LABEL_LV)).any()
    nib.save(nib.Nifti1Image(mask, stored.affine, stored.header), str(path))
    kept = load_slices(phantom_copy, DataConfig(groups=("DCM",), frames=("ED",), size=32))
    assert sorted(kept.slice_index[kept.patient == patient.id].tolist()) == list(range(2, n_slices))


def test_normalise_volume_clips_to_percentiles():
    volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    out = normalise_volume(volume, (10.0, 90.0))
    assert out.min() == 0.0 and out.max() == 1.0
    assert (out == 0).sum() == 100 and (out == 1).sum() == 100
    with pytest.raises(HcmbenchError, match="no intensity range"):
        normalise_volume(np.ones((4, 4, 2)))


def test_crop_keeps_physical_size_and_centre():
    rows, cols = np.mgrid[:200, :240]
    spacing = (1.5, 1.25)
    centre = (80.3, 150.7)
    disc = (((rows - centre[0]) * spacing[0]) ** 2 + ((cols - centre[1]) * spacing[1]) ** 2 < 20.0**2)
    out = crop_field_of_view(disc.astype(np.float32), centre, spacing, fov_mm=160.0, size=32, order=0)
    # 160 mm over 32 px is 5 mm per pixel: a disc of radius 20 mm covers about pi * 4^2 pixels.
    assert out.sum() == pytest.approx(np.pi * 16, rel=0.2)
    assert np.allclose(ndimage.center_of_mass(out), (15.5, 15.5), atol=0.5)


def test_crop_zero_pads_outside_the_image():
    image = np.ones((50, 50), np.float32)
    out = crop_field_of_view(image, (0.0, 0.0), (1.0, 1.0), fov_mm=100.0, size=32)
    assert out[0, 0] == 0.0 and out[-1, -1] == pytest.approx(1.0)


def test_no_patient_is_in_two_splits(all_slices):
    per_patient = {}
    for pid, split in zip(all_slices.patient.tolist(), all_slices.split.tolist()):
        per_patient.setdefault(pid, set()).add(split)
    assert all(len(s) == 1 for s in per_patient.values())
    assert len(per_patient) == 10


def test_split_is_stratified_and_reproducible(phantom_root):
    patients = open_dataset(phantom_root).patients
    many = [p.__class__(f"patient{i:03d}", p.folder, p.info) for i, p in enumerate(patients * 4)]
    first = split_patients(many, (0.7, 0.15, 0.15), seed=0)
    assert first == split_patients(many, (0.7, 0.15, 0.15), seed=0)
    assert first != split_patients(many, (0.7, 0.15, 0.15), seed=1)
    for group in GROUPS:
        ids = [p.id for p in many if p.group == group]
        assert sorted(first[i] for i in ids) == ["test"] + ["train"] * 6 + ["val"]


def test_second_load_hits_the_cache(phantom_root, monkeypatch):
    config = DataConfig(groups=("HCM", "NOR"), size=32)
    first = load_slices(phantom_root, config)
    assert not first.from_cache

    def fail(*args, **kwargs):
        raise AssertionError("preprocessing ran despite a cached result")

    monkeypatch.setattr(slices_module, "preprocess_patient", fail)
    second = load_slices(phantom_root, config)
    assert second.from_cache and second.key == first.key
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.split, second.split)


def test_cache_misses_on_changed_setting_or_file(phantom_copy):
    config = DataConfig(groups=("HCM",), size=32)
    key = load_slices(phantom_copy, config).key
    assert load_slices(phantom_copy, DataConfig(groups=("HCM",), size=32, fov_mm=150.0)).key != key
    patient = open_dataset(phantom_copy).select(["HCM"])[0]
    (patient.folder / f"{patient.id}_frame05.nii.gz").write_bytes(b"a file ED/ES preprocessing never reads")
    assert load_slices(phantom_copy, config).from_cache
    path = patient.image_path(patient.info.ed)
    image = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj) // 2, image.affine, image.header), str(path))
    again = load_slices(phantom_copy, config)
    assert again.key != key and not again.from_cache


def test_unknown_group_and_empty_selection(phantom_copy):
    with pytest.raises(HcmbenchError, match="unknown group XYZ"):
        load_slices(phantom_copy, DataConfig(groups=("XYZ",)))
    for patient in open_dataset(phantom_copy).select(["RV"]):
        for frame in (patient.info.ed, patient.info.es):
            path = patient.mask_path(frame)
            mask = nib.load(str(path))
            nib.save(nib.Nifti1Image(np.zeros(mask.shape, np.uint8), mask.affine, mask.header), str(path))
    with pytest.raises(HcmbenchError, match="has no slices"):
        load_slices(phantom_copy, DataConfig(groups=("RV",), size=32))


def test_skip_bad_loads_the_rest_and_reports(phantom_copy):
    patient = open_dataset(phantom_copy).select(["HCM"])[1]
    path = patient.image_path(patient.info.es)
    path.write_bytes(path.read_bytes()[:200])
    config = DataConfig(groups=("HCM",), size=32)
    with pytest.raises(HcmbenchError, match=str(path)):
        load_slices(phantom_copy, config)
    partial = load_slices(phantom_copy, config, skip_bad=True)
    assert partial.patients == [open_dataset(phantom_copy).select(["HCM"])[0].id]
    assert len(partial.skipped) == 1 and str(path) in partial.skipped[0]


def test_torch_dataset_scales_to_minus_one_one_and_labels(all_slices):
    train = SliceDataset(all_slices, "train")
    image, label = train[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert train.images.min() >= -1.0 and train.images.max() <= 1.0
    expected = all_slices.of_split("train").images * 2.0 - 1.0
    np.testing.assert_allclose(train.images[:, 0].numpy(), expected, atol=1e-6)
    assert train.label_by == "group" and train.classes == list(GROUPS)
    assert label.dtype == torch.int64
    assert set(train.labels.tolist()) == set(range(5))
    assert len(train) + len(SliceDataset(all_slices, "val")) + len(SliceDataset(all_slices, "test")) == len(all_slices)


def test_single_group_is_labelled_by_phase(phantom_root):
    hcm = load_slices(phantom_root, DataConfig(groups=("HCM",), size=32))
    data = SliceDataset(hcm, split=None)
    assert data.label_by == "phase" and data.classes == ["ED", "ES"]
    phases = [data.classes[i] for i in data.labels.tolist()]
    assert phases == hcm.phase.tolist()


def test_real_hcm_slices_are_finite_and_in_range(acdc_root):
    hcm = load_slices(acdc_root, DataConfig(groups=("HCM",), size=64))
    assert len(hcm.patients) == 20
    assert np.isfinite(hcm.images).all()
    assert hcm.images.min() >= 0.0 and hcm.images.max() <= 1.0
    assert hcm.images.shape[1:] == (64, 64) and len(hcm) > 200


def test_cine_frames_are_every_frame_of_the_4d_file_read_once(tmp_path, monkeypatch):
    from hcmbench.data import acdc
    from hcmbench.data.phantom import PhantomConfig, write_phantom

    root = write_phantom(tmp_path / "cine", PhantomConfig(patients_per_group=2, seed=3, cine=True, groups=("HCM",)))
    patient = open_dataset(root).patients[0]
    info = patient.info
    selected = patient.selected_frames(("ES", "cine"))  # once each, ES keeping its place and its name
    assert [n for _, n in selected] == [info.es] + [n for n in range(1, info.nb_frame + 1) if n != info.es]
    phases = dict((n, p) for p, n in selected)
    assert phases[info.ed] == "ED" and phases[info.es] == "ES" and phases[2] == "F02"
    reads = []
    plain = acdc._read_nifti
    monkeypatch.setattr(acdc, "_read_nifti", lambda path, *a, **k: reads.append(path) or plain(path, *a, **k))
    frames = list(patient.load_frames(n for _, n in selected))
    assert reads.count(patient.cine_path) == 1  # the cine file is decompressed once for all its frames
    for frame in frames:  # a cine frame is that frame of the 4D volume; ED and ES come from their own files
        expected = nib.load(str(patient.cine_path)).get_fdata()[..., frame.number - 1]
        np.testing.assert_allclose(frame.image.data, expected, rtol=1e-5)
        assert (frame.mask is not None) == (frame.number in (info.ed, info.es))

    cine = load_slices(root, DataConfig(groups=("HCM",), frames=("cine",), size=32))
    ed_es = load_slices(root, DataConfig(groups=("HCM",), size=32))
    expected = {p for patient in open_dataset(root).patients for p, _ in patient.selected_frames(("cine",))}
    assert set(cine.phase) == expected and {"ED", "ES", "F02"} <= expected
    assert len(cine) > len(ed_es) * 3
    for phase in ("ED", "ES"):  # the ED and ES slices of a cine selection are those of an ED/ES one
        np.testing.assert_array_equal(cine.images[cine.phase == phase], ed_es.images[ed_es.phase == phase])
    assert not cine.has_mask[~np.isin(cine.phase, ["ED", "ES"])].any()


def test_cine_frames_need_the_4d_files_and_frames_are_checked(phantom_root):
    with pytest.raises(HcmbenchError, match="frames 'cine' need patient.*_4d.nii.gz"):
        load_slices(phantom_root, DataConfig(groups=("HCM",), frames=("cine",), size=32))
    with pytest.raises(HcmbenchError, match="unknown frame 'mid'"):
        DataConfig(frames=("ED", "mid"))
    with pytest.raises(HcmbenchError, match="unknown frame '0'"):
        DataConfig(frames=("0",))
