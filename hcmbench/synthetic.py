"""Synthetic datasets from a trained generator: ACDC-layout NIfTI, PNGs, or one .npz.

The NIfTI form drops into ACDC pipelines (and hcmbench's own reader): `patientNNN/` folders with an
`Info.cfg` and `patientNNN_frameXX.nii.gz` volumes. A synthetic patient's volume is a stack of
`slices_per_volume` *independent* generated slices along z, not a coherent heart: neighbouring
slices are unrelated, so anything 3D (volumes, ejection fraction, slice-position reasoning) is
meaningless on it. There are no `_gt` masks: generated images have no ground truth.

Choices, also written into every dataset's README.txt:
- intensities are int16, 0..1000 = the generated pixel value in [0, 1] × 1000 (finer than 8-bit PNG,
  integer like ACDC's own files, no NIfTI scaling factors for a pipeline to ignore);
- voxel spacing is the model's: `fov_mm / size` in-plane, a nominal 10 mm between slices;
- Height and Weight in Info.cfg are fixed placeholders (170 cm, 70 kg), not drawn per patient;
- the group is the class for a model conditioned on the group, else the one group the model was
  trained on; an unconditional model trained on several groups cannot say which group an image
  shows, so it cannot be written as ACDC (use png or npz);
- a model conditioned on the phase has its ED-labelled slices in frame 01 and ES-labelled slices in
  frame 02 of the same patient (`ED: 1`, `ES: 2`). A patient holding a single volume (every patient
  of a model not conditioned on the phase, and the unpaired ones of one that is) has it as frame 01,
  with `ED: 1`, `ES: 1`, `NbFrame: 1`, because ACDC readers need both frames to exist; readers that
  load ED and ES therefore read such a volume twice. `manifest.csv` gives every slice's true label;
- slices are grouped by label, then cut into volumes in generation order, so the last volume of each
  label holds the remainder.
"""

from __future__ import annotations

import csv
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from hcmbench import __version__
from hcmbench.atomic import atomic_folder, check_new_folder
from hcmbench.config import DataConfig
from hcmbench.errors import HcmbenchError
from hcmbench.intensity import to_unit_range

FORMATS: tuple[str, ...] = ("nifti", "png", "npz")
INTENSITY_SCALE = 1000  # int16 value of a pixel of 1.0
SLICE_THICKNESS_MM = 10.0
HEIGHT_CM, WEIGHT_KG = 170.0, 70.0  # placeholders: a generated slice has no patient behind it
MAX_PATIENTS = 999  # patientNNN


@dataclass(frozen=True)
class PlannedVolume:
    """One NIfTI volume of a synthetic patient: its frame number, phase if known, and which generated
    images (indices into the generated set) it stacks along z, first index at z = 0."""

    frame: int
    phase: str | None
    samples: tuple[int, ...]


@dataclass(frozen=True)
class PlannedPatient:
    """A synthetic patient folder: id, ACDC group, the ED and ES frame numbers, and its volumes."""

    id: str
    group: str
    ed: int
    es: int
    volumes: tuple[PlannedVolume, ...]


@dataclass(frozen=True)
class GeneratedDataset:
    """What `generate_dataset` wrote."""

    path: Path
    format: str
    images: int
    patients: int  # 0 unless the format is nifti
    model: str


def check_format(fmt: str) -> str:
    """The format name in lower case; anything but nifti, png or npz raises HcmbenchError."""
    name = fmt.strip().lower()
    if name not in FORMATS:
        raise HcmbenchError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    return name


def _group_for(class_name: str | None, label_by: str | None, data_config: DataConfig) -> str:
    if class_name is not None and label_by == "group":
        return class_name.upper()
    if len(data_config.groups) == 1:
        return data_config.groups[0].upper()
    raise HcmbenchError(
        f"the model was trained on groups {', '.join(data_config.groups)} without being conditioned on the "
        "group, so the group of a generated image is unknown and an ACDC Info.cfg cannot name it: "
        "use --format png or npz")


def _chunks(indices: list[int], size: int) -> list[tuple[int, ...]]:
    return [tuple(indices[i:i + size]) for i in range(0, len(indices), size)]


def plan_patients(labels: np.ndarray | torch.Tensor | None, n: int, classes: list[str], label_by: str | None,
                  data_config: DataConfig, slices_per_volume: int = 8) -> list[PlannedPatient]:
    """How `n` generated images (with integer `labels`, None for an unconditional model) are laid out
    as ACDC patients; raises HcmbenchError when they cannot be (group unknown, over 999 patients)."""
    if slices_per_volume < 1:
        raise HcmbenchError(f"slices per volume must be at least 1, got {slices_per_volume}")
    names: list[str | None] = [None] * n if labels is None else [classes[int(i)] for i in np.asarray(labels)]
    by_label: dict[str | None, list[int]] = {}
    for index, name in enumerate(names):
        by_label.setdefault(name, []).append(index)
    order = sorted(by_label, key=lambda name: -1 if name is None else classes.index(name))
    single: list[tuple[str | None, tuple[int, ...]]] = []  # (label, samples) of one-volume patients
    paired: list[tuple[tuple[int, ...] | None, tuple[int, ...] | None]] = []
    if label_by == "phase" and labels is not None:
        ed = _chunks(by_label.pop("ED", []), slices_per_volume)
        es = _chunks(by_label.pop("ES", []), slices_per_volume)
        paired = [(ed[i] if i < len(ed) else None, es[i] if i < len(es) else None) for i in range(max(len(ed), len(es)))]
        order = [name for name in order if name in by_label]
    for name in order:
        single += [(name, chunk) for chunk in _chunks(by_label[name], slices_per_volume)]
    if len(paired) + len(single) > MAX_PATIENTS:
        raise HcmbenchError(f"{n} images at {slices_per_volume} slices per volume need {len(paired) + len(single)} "
                            f"patients, but ACDC numbering stops at {MAX_PATIENTS}: raise --slices-per-volume")
    patients: list[PlannedPatient] = []
    for ed_samples, es_samples in paired:
        group = _group_for("ED" if ed_samples else "ES", label_by, data_config)
        if ed_samples and es_samples:
            volumes = (PlannedVolume(1, "ED", ed_samples), PlannedVolume(2, "ES", es_samples))
            patients.append(PlannedPatient(f"patient{len(patients) + 1:03d}", group, 1, 2, volumes))
        else:
            phase, samples = ("ED", ed_samples) if ed_samples else ("ES", es_samples)
            volumes = (PlannedVolume(1, phase, samples),)  # type: ignore[arg-type]
            patients.append(PlannedPatient(f"patient{len(patients) + 1:03d}", group, 1, 1, volumes))
    for name, samples in single:
        volume = PlannedVolume(1, name if label_by == "phase" else None, samples)
        patients.append(PlannedPatient(f"patient{len(patients) + 1:03d}", _group_for(name, label_by, data_config),
                                       1, 1, (volume,)))
    return patients


def _pixels01(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images in [-1, 1], (n, 1, S, S) or (n, S, S), as float32 (n, S, S) in [0, 1] (as samples.npz holds)."""
    array = to_unit_range(images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images)
    return array[:, 0] if array.ndim == 4 else array


def _write_npz(path: Path, pixels: np.ndarray, labels: np.ndarray | None, classes: list[str]) -> None:
    """samples.npz as `sampling.write_samples` writes it: images in [0, 1], labels (-1: none), classes."""
    label_array = np.asarray(labels) if labels is not None else np.full(len(pixels), -1)
    np.savez_compressed(path, images=pixels, labels=label_array, classes=np.array(classes, dtype=str))


def _save_volume(array: np.ndarray, spacing: float, path: Path) -> None:
    """Write an int16 (S, S, k) volume with the phantom's ACDC-like header: affine diag(-s, -s, 10)."""
    affine = np.diag([-spacing, -spacing, SLICE_THICKNESS_MM, 1.0])
    image = nib.Nifti1Image(array, affine)
    image.header.set_data_dtype(np.int16)
    image.set_sform(affine, code=2)
    image.set_qform(affine, code=0)
    nib.save(image, path)


def _write_nifti(folder: Path, pixels: np.ndarray, labels: np.ndarray | None, classes: list[str],
                 plan: list[PlannedPatient], spacing: float) -> None:
    stored = np.rint(np.clip(pixels, 0.0, 1.0) * INTENSITY_SCALE).astype(np.int16)
    rows = []
    for patient in plan:
        home = folder / patient.id
        home.mkdir()
        (home / "Info.cfg").write_text(
            f"ED: {patient.ed}\nES: {patient.es}\nGroup: {patient.group}\nHeight: {HEIGHT_CM:.1f}\n"
            f"NbFrame: {len(patient.volumes)}\nWeight: {WEIGHT_KG:.1f}\n")
        for volume in patient.volumes:
            # The reader takes slice k as data[:, :, k], first array axis as image rows, like the phantom.
            array = np.stack([stored[i] for i in volume.samples], axis=-1)
            _save_volume(array, spacing, home / f"{patient.id}_frame{volume.frame:02d}.nii.gz")
            for z, sample in enumerate(volume.samples):
                label = classes[int(labels[sample])] if labels is not None else ""
                rows.append((patient.id, volume.frame, z, sample, label, patient.group))
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("patient", "frame", "slice", "sample", "label", "group"))
        writer.writerows(rows)


def _readme(fmt: str, provenance: dict[str, Any], n: int, size: int, spacing: float, patients: int,
            slices_per_volume: int) -> str:
    lines = ["hcmbench synthetic dataset: GENERATED images, not real patient data.", ""]
    lines += [f"{key}: {value}" for key, value in provenance.items()]
    lines += [f"format: {fmt}", f"images: {n} of {size} x {size} pixels", ""]
    if fmt == "nifti":
        lines += [
            f"ACDC layout: {patients} patientNNN/ folders, each with Info.cfg and patientNNN_frameXX.nii.gz "
            f"volumes of up to {slices_per_volume} slices (the last volume of each label holds the remainder).",
            "- Each volume stacks INDEPENDENT generated slices along z: not a coherent heart. Neighbouring "
            "slices are unrelated; volumes, ejection fractions and slice positions mean nothing here.",
            f"- Intensities: int16, 0..{INTENSITY_SCALE} = generated pixel value in [0, 1] x {INTENSITY_SCALE}.",
            f"- Voxel spacing: {spacing:g} mm in-plane (the model's field of view / size), a nominal "
            f"{SLICE_THICKNESS_MM:g} mm between slices.",
            "- No _gt masks: generated images have no ground truth.",
            f"- Height ({HEIGHT_CM:g}) and Weight ({WEIGHT_KG:g}) in Info.cfg are fixed placeholders.",
            "- Group: the class of a group-conditioned model, else the one group the model was trained on.",
            "- Phase: a phase-conditioned model's ED slices are frame 01 and its ES slices frame 02 of the same "
            "patient. A patient with a single volume has it as frame 01 named as both ED and ES (ACDC readers "
            "need both frames), so readers that load ED and ES read it twice.",
            "- manifest.csv: for every slice, its patient, frame, z index, index in the generated set, label and group.",
            "- hcmbench's own preprocessing, without masks, keeps only the middle share of each volume's slices "
            "(DataConfig.middle_fraction, default 0.6).",
        ]
    else:
        lines.append("samples.npz: images float32 (n, S, S) in [0, 1], labels (-1: unconditional), classes."
                     + (" One sample_NNNNN.png per image (8-bit)." if fmt == "png" else ""))
    return "\n".join(lines) + "\n"


def write_dataset(images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | None, classes: list[str],
                  out: str | Path, fmt: str = "nifti", label_by: str | None = None,
                  data_config: DataConfig = DataConfig(), slices_per_volume: int = 8,
                  provenance: dict[str, Any] | None = None) -> Path:
    """Write generated `images` (in [-1, 1], (n, 1, S, S)) and their integer `labels` (None: unconditional)
    as a synthetic dataset in `out`, with a README.txt recording `provenance` (source, model, seed, ...).

    `fmt`: "nifti" (ACDC layout, see the module docstring), "png" (`sampling.write_samples`: one PNG per
    image and samples.npz) or "npz" (samples.npz only). `label_by` and `data_config` are the checkpoint's:
    they say what the labels mean, the group, and the voxel spacing. `out` must not exist or be empty;
    it is filled in a hidden sibling folder renamed into place at the end, so nothing is left half-written.
    """
    from hcmbench.sampling import write_samples

    fmt, out = check_format(fmt), Path(out)
    pixels = _pixels01(images)
    n, size = len(pixels), pixels.shape[-1]
    label_array = None if labels is None else np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    spacing = data_config.fov_mm / size
    plan = plan_patients(label_array, n, classes, label_by, data_config, slices_per_volume) if fmt == "nifti" else []
    readme = _readme(fmt, provenance or {}, n, size, spacing, len(plan), slices_per_volume)
    with atomic_folder(out) as tmp:
        if fmt == "nifti":
            _write_nifti(tmp, pixels, label_array, classes, plan, spacing)
        elif fmt == "png":
            as_tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images, np.float32))
            label_tensor = None if label_array is None else torch.from_numpy(label_array)
            write_samples(tmp, as_tensor.reshape(n, 1, size, size), label_tensor, classes)  # tmp is empty: allowed
        else:
            _write_npz(tmp / "samples.npz", pixels, label_array, classes)
        (tmp / "README.txt").write_text(readme)
    return out


def generate_dataset(
    checkpoint: str | Path,
    out: str | Path,
    n: int,
    fmt: str = "nifti",
    label: str | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    slices_per_volume: int = 8,
    source: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GeneratedDataset:
    """Draw `n` images from a checkpoint (seeded, `label` or all classes in equal shares) and write them
    with `write_dataset`. Every request error (format, label, options, non-empty `out`, a group that
    ACDC cannot name) is raised as HcmbenchError before any sampling."""
    from hcmbench.checkpoints import data_config_of, load_generator, resolve_device
    from hcmbench.sampling import check_sample_options, draw, resolve_labels

    fmt, out = check_format(fmt), Path(out)
    if n < 1:
        raise HcmbenchError(f"number of images must be at least 1, got {n}")
    check_new_folder(out)  # before any sampling: refused now rather than by atomic_folder at the end
    generator = load_generator(checkpoint, device=resolve_device(device))
    state = generator.state
    data_config, label_by = data_config_of(state), state.get("label_by")
    options = check_sample_options(generator, options or {})
    labels = resolve_labels(generator, n, label)
    plan = plan_patients(labels, n, generator.classes, label_by, data_config, slices_per_volume) if fmt == "nifti" else []
    images, labels = draw(generator, n, label, seed, batch_size, options, progress)
    conditioning = f"conditioned on the {label_by} ({', '.join(generator.classes)})" if generator.model.conditional \
        else "unconditional"
    provenance = {
        "source": source if source is not None else str(checkpoint),
        "model": f"{generator.model.name}, {conditioning}, epoch {state.get('epoch', '?')}",
        "trained on": f"groups {', '.join(data_config.groups)}, frames {', '.join(map(str, data_config.frames))}",
        "seed": seed,
        "n": n,
        "label": label if label is not None else ("all classes in equal shares" if generator.model.conditional else "none"),
        "sampling options": ", ".join(f"{k}={v}" for k, v in options.items()) or "model defaults",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hcmbench": __version__,
    }
    write_dataset(images, labels, generator.classes, out, fmt, label_by, data_config, slices_per_volume, provenance)
    return GeneratedDataset(out, fmt, n, len(plan), generator.model.name)
