"""The ACDC reader on the phantom, on damaged copies of it, and on the real data when available."""

from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest

from hcmbench import HcmbenchError
from hcmbench.data.acdc import GROUPS, find_patient_dirs, load_mask, open_dataset, parse_info
from hcmbench.data.phantom import PhantomConfig, write_phantom


def test_reader_indexes_every_phantom_patient(phantom_root):
    dataset = open_dataset(phantom_root)
    assert [p.id for p in dataset.patients] == [f"patient{i:03d}" for i in range(1, 11)]
    assert dataset.groups_present == GROUPS
    assert [p.group for p in dataset.patients] == [g for g in GROUPS for _ in range(2)]
    info = dataset.patients[0].info
    assert info.ed == 1 and info.ed < info.es <= info.nb_frame
    assert info.height > 100 and info.weight > 30


def test_patients_directly_in_root_or_under_training(phantom_copy):
    flat = phantom_copy.parent / "flat"
    shutil.copytree(phantom_copy / "training" / "patient003", flat / "patient003")
    assert [d.name for d in find_patient_dirs(flat)] == ["patient003"]
    assert len(find_patient_dirs(phantom_copy)) == 10


def test_frames_load_with_header_spacing_and_matching_masks(phantom_root):
    patient = open_dataset(phantom_root).patients[2]
    ed, es = patient.load_frame("ED"), patient.load_frame("es")
    assert (ed.number, es.number) == (patient.info.ed, patient.info.es)
    header = nib.load(str(patient.image_path(patient.info.ed))).header
    assert ed.image.spacing == pytest.approx(tuple(float(z) for z in header.get_zooms()))
    assert ed.image.data.dtype == np.float32 and ed.image.data.shape == ed.mask.shape
    assert ed.mask.dtype == np.uint8 and set(np.unique(ed.mask)) <= {0, 1, 2, 3}
    assert ed.image.orientation == ("L", "P", "S")
    assert not np.array_equal(ed.image.data, es.image.data)


def test_other_frames_come_from_the_cine_file(tmp_path):
    root = write_phantom(tmp_path / "cine", PhantomConfig(patients_per_group=1, seed=3, cine=True, groups=("HCM",)))
    patient = open_dataset(root).patients[0]
    assert patient.cine_path is not None
    middle = patient.load_frame(patient.info.es - 2)
    assert middle.mask is None and middle.image.path == patient.cine_path
    es_from_cine = patient.load_frame(str(patient.info.es))
    assert es_from_cine.image.path == patient.image_path(patient.info.es)
    with pytest.raises(HcmbenchError, match="outside"):
        patient.load_frame(patient.info.nb_frame + 1)


def test_frame_without_file_or_cine_is_an_error(phantom_root):
    patient = open_dataset(phantom_root).patients[0]
    with pytest.raises(HcmbenchError, match="_4d.nii.gz"):
        patient.load_frame(3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("ED: 1\nES: 12\n", "lacks Group"),
        ("ED: 1\nES: twelve\nGroup: HCM\n", "bad value for ES"),
        ("ED 1\nES: 12\nGroup: HCM\n", "malformed"),
        ("ED: 1\nES: 12\nGroup: XYZ\n", "unknown group 'XYZ'"),
    ],
)
def test_malformed_info_cfg_is_named(tmp_path, text, message):
    path = tmp_path / "Info.cfg"
    path.write_text(text)
    with pytest.raises(HcmbenchError, match=message) as error:
        parse_info(path)
    assert str(path) in str(error.value)


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(HcmbenchError, match="no such data folder"):
        open_dataset(tmp_path / "nowhere")
    with pytest.raises(HcmbenchError, match="no patientNNN folders"):
        open_dataset(tmp_path)


def test_missing_info_cfg_is_named_and_skippable(phantom_copy):
    info = phantom_copy / "training" / "patient004" / "Info.cfg"
    info.unlink()
    with pytest.raises(HcmbenchError, match="missing Info.cfg") as error:
        open_dataset(phantom_copy)
    assert str(info) in str(error.value)
    dataset = open_dataset(phantom_copy, skip_bad=True)
    assert len(dataset.patients) == 9 and len(dataset.skipped) == 1 and "patient004" in dataset.skipped[0]


def test_truncated_and_garbage_nifti_are_named(phantom_copy):
    patient = open_dataset(phantom_copy).patients[1]
    path = patient.image_path(patient.info.ed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HcmbenchError, match="corrupt or truncated") as error:
        patient.load_frame("ED")
    assert str(path) in str(error.value)
    path.write_bytes(gzip.compress(b"not a nifti file at all" * 20))
    with pytest.raises(HcmbenchError, match="corrupt or truncated"):
        patient.load_frame("ED")


def test_mask_with_another_shape_is_named(phantom_copy):
    patient = open_dataset(phantom_copy).patients[5]
    mask_path = patient.mask_path(patient.info.es)
    mask = nib.load(str(mask_path))
    smaller = nib.Nifti1Image(np.asanyarray(mask.dataobj)[:-4], mask.affine, mask.header)
    nib.save(smaller, str(mask_path))
    with pytest.raises(HcmbenchError, match="mask shape .* differs from image shape") as error:
        patient.load_frame("ES")
    assert str(mask_path) in str(error.value)


def test_mask_labels_outside_acdc_are_rejected(tmp_path):
    path = tmp_path / "bad_gt.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 2), 7, np.uint8), np.eye(4)), str(path))
    with pytest.raises(HcmbenchError, match="not ACDC labels"):
        load_mask(path)


def test_real_acdc_has_twenty_patients_per_group(acdc_root):
    dataset = open_dataset(acdc_root)
    assert len(dataset.patients) == 100
    for group in GROUPS:
        assert len(dataset.select([group])) == 20
    hcm = dataset.select(["hcm"])[0]
    frame = hcm.load_frame("ED")
    assert frame.mask is not None and frame.mask.shape == frame.image.shape
