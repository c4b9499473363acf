"""Preprocessing protocol (docs/design.md): ACDC volumes → normalised, heart-centred 2D slices, cached.

Per selected patient and frame: clip intensities per volume to percentiles and scale to [0, 1];
keep slices whose mask shows myocardium (without a mask, the central share of slices); cut a
square field of view of fixed physical size around the heart and resample it to `size` pixels in
one interpolation (zero outside the image). Splits are by patient, stratified by group.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from hcmbench.atomic import atomic_path
from hcmbench.config import DataConfig, cache_dir
from hcmbench.data.acdc import LABEL_MYO, Dataset, Patient, open_dataset, validate_groups
from hcmbench.errors import HcmbenchError

# Bump when the preprocessing code changes what it produces, so that old caches are not reused.
PREPROCESS_VERSION = 1
SPLITS = ("train", "val", "test")
_ARRAY_FIELDS = ("images", "masks", "has_mask", "patient", "group", "phase", "frame",
                 "slice_index", "slice_position", "split")

Progress = Callable[[int, int], None]


@dataclass
class SliceSet:
    """Preprocessed slices and the labels of each: images float32 (N, S, S) in [0, 1].

    `masks` are the expert labels resampled the same way (zeros where `has_mask` is False);
    `slice_position` runs from 0 at the base to 1 at the apex of the volume.
    """

    images: np.ndarray
    masks: np.ndarray
    has_mask: np.ndarray
    patient: np.ndarray
    group: np.ndarray
    phase: np.ndarray
    frame: np.ndarray
    slice_index: np.ndarray
    slice_position: np.ndarray
    split: np.ndarray
    config: DataConfig
    key: str = ""
    skipped: list[str] = field(default_factory=list)
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> SliceSet:
        """The slices at `index` (a boolean mask or integer indices), with the same config."""
        arrays = {name: getattr(self, name)[index] for name in _ARRAY_FIELDS}
        return SliceSet(**arrays, config=self.config, key=self.key, skipped=self.skipped, from_cache=self.from_cache)

    def of_split(self, split: str) -> SliceSet:
        """The slices of one patient-level split: 'train', 'val' or 'test'."""
        if split not in SPLITS:
            raise HcmbenchError(f"unknown split {split!r}: choose from {', '.join(SPLITS)}")
        return self.subset(self.split == split)

    @property
    def patients(self) -> list[str]:
        return sorted(set(self.patient.tolist()))


def normalise_volume(data: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.5)) -> np.ndarray:
    """Clip a volume to its own intensity percentiles and scale to [0, 1] (float32)."""
    low, high = np.percentile(data, percentiles)
    if high <= low:
        raise HcmbenchError("volume has no intensity range between its clip percentiles")
    return np.clip((data.astype(np.float32) - low) / (high - low), 0.0, 1.0)


def heart_centre(mask: np.ndarray | None, shape: tuple[int, int]) -> tuple[float, float]:
    """Centroid (pixel coordinates) of labels 1-3 of a 2D mask, else the image centre."""
    if mask is not None and (mask > 0).any():
        return tuple(float(c) for c in ndimage.center_of_mass(mask > 0))  # type: ignore[return-value]
    return ((shape[0] - 1) / 2, (shape[1] - 1) / 2)


def crop_field_of_view(
    image: np.ndarray,
    centre: tuple[float, float],
    spacing: tuple[float, float],
    fov_mm: float = 160.0,
    size: int = 64,
    order: int = 1,
) -> np.ndarray:
    """Resample a square `fov_mm` field of view centred on `centre` to `size` × `size` pixels.

    One interpolation, sub-pixel exact, zero outside the image. For intensities (order 1) the image is
    low-pass filtered first when downsampling, so that small structures do not alias; masks use order 0.
    """
    step = np.array([fov_mm / size / spacing[0], fov_mm / size / spacing[1]])  # input px per output px
    if order > 0 and (step > 1).any():
        image = ndimage.gaussian_filter(image, sigma=np.maximum(0.0, (step - 1) / 2), mode="nearest")
    offsets = (np.arange(size) - (size - 1) / 2)
    rows = centre[0] + offsets[:, None] * step[0]
    cols = centre[1] + offsets[None, :] * step[1]
    grid = np.stack(np.broadcast_arrays(rows, cols))
    return ndimage.map_coordinates(image, grid, order=order, mode="constant", cval=0.0, prefilter=False)


def _keep_slices(mask: np.ndarray | None, n_slices: int, middle_fraction: float) -> list[int]:
    if mask is not None:
        return [k for k in range(n_slices) if (mask[:, :, k] == LABEL_MYO).any()]
    keep = max(1, round(n_slices * middle_fraction))
    start = (n_slices - keep) // 2
    return list(range(start, start + keep))


def preprocess_patient(patient: Patient, config: DataConfig) -> list[dict]:
    """Every kept slice of a patient's selected frames, as dicts of image, mask and labels.

    A frame without its own mask (a cine frame) borrows the ED mask for slice choice and centring, as
    the heart barely moves in-plane over the cycle; with no mask at all, the protocol's fallback applies.
    """
    rows: list[dict] = []
    ed_mask: np.ndarray | None = None
    selected = patient.selected_frames(config.frames)
    for (phase, _), frame in zip(selected, patient.load_frames(number for _, number in selected)):
        if frame.mask is None and ed_mask is None and patient.mask_path(patient.info.ed).exists():
            ed_mask = patient.load_frame("ED").mask
        mask = frame.mask if frame.mask is not None else ed_mask
        if mask is not None and mask.shape != frame.image.shape:
            mask = None
        volume = frame.image
        try:
            normalised = normalise_volume(volume.data, config.clip_percentiles)
        except HcmbenchError as exc:
            raise HcmbenchError(f"{volume.path}: {exc}") from None
        n_slices = volume.shape[2]
        for k in _keep_slices(mask, n_slices, config.middle_fraction):
            slice_mask = mask[:, :, k] if mask is not None else None
            centre = heart_centre(slice_mask, volume.shape[:2])
            spacing = volume.spacing[:2]
            image = crop_field_of_view(normalised[:, :, k], centre, spacing, config.fov_mm, config.size)
            out_mask = (
                crop_field_of_view(slice_mask.astype(np.float32), centre, spacing, config.fov_mm, config.size, order=0)
                if slice_mask is not None
                else np.zeros((config.size, config.size))
            )
            rows.append(dict(
                images=np.clip(image, 0.0, 1.0).astype(np.float32),
                masks=out_mask.astype(np.uint8),
                has_mask=frame.mask is not None,
                patient=patient.id,
                group=patient.group,
                phase=phase,
                frame=frame.number,
                slice_index=k,
                slice_position=k / max(1, n_slices - 1),
            ))
    return rows


def split_patients(patients: list[Patient], shares: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Assign each patient to train/val/test, per group, reproducibly for a seed.

    Validation and test each get at least one patient of a group that has three or more.
    """
    assignment: dict[str, str] = {}
    by_group: dict[str, list[str]] = {}
    for p in patients:
        by_group.setdefault(p.group, []).append(p.id)
    for group, ids in sorted(by_group.items()):
        ids = sorted(ids)
        rng = np.random.default_rng([seed, sum(map(ord, group))])
        order = [ids[i] for i in rng.permutation(len(ids))]
        n = len(order)
        n_val = round(n * shares[1])
        n_test = round(n * shares[2])
        if n >= 3:
            n_val = max(n_val, 1) if shares[1] > 0 else 0
            n_test = max(n_test, 1) if shares[2] > 0 else 0
        n_val = min(n_val, max(0, n - 1))
        n_test = min(n_test, max(0, n - 1 - n_val))
        for i, pid in enumerate(order):
            assignment[pid] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return assignment


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return "missing"
    return digest.hexdigest()


def cache_key(patients: list[Patient], config: DataConfig, skip_bad: bool) -> str:
    """A hash of every input file's content and every setting (not of paths, so copies share it)."""
    digest = hashlib.sha256()
    settings = dict(dataclasses.asdict(config), skip_bad=skip_bad, version=PREPROCESS_VERSION)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for patient in sorted(patients, key=lambda p: p.id):
        digest.update(patient.id.encode())
        try:
            # The ED mask is read too: frames without masks borrow it.
            numbers = [number for _, number in patient.selected_frames(config.frames)]
            paths = [p for number in numbers for p in patient.frame_files(number)] + patient.frame_files("ED")[1:]
        except HcmbenchError as exc:  # a bad frame request fails in preprocessing, where skip_bad applies
            digest.update(str(exc).encode())
            paths = []
        for path in [patient.folder / "Info.cfg", *dict.fromkeys(paths)]:
            digest.update(path.name.encode() + _file_digest(path).encode())
    return digest.hexdigest()[:24]


def _stack(rows: list[dict], config: DataConfig, key: str, skipped: list[str], split: dict[str, str]) -> SliceSet:
    size = config.size
    arrays = {
        "images": np.stack([r["images"] for r in rows]) if rows else np.zeros((0, size, size), np.float32),
        "masks": np.stack([r["masks"] for r in rows]) if rows else np.zeros((0, size, size), np.uint8),
        "has_mask": np.array([r["has_mask"] for r in rows], dtype=bool),
        "patient": np.array([r["patient"] for r in rows], dtype="<U16"),
        "group": np.array([r["group"] for r in rows], dtype="<U8"),
        "phase": np.array([r["phase"] for r in rows], dtype="<U8"),
        "frame": np.array([r["frame"] for r in rows], dtype=np.int16),
        "slice_index": np.array([r["slice_index"] for r in rows], dtype=np.int16),
        "slice_position": np.array([r["slice_position"] for r in rows], dtype=np.float32),
        "split": np.array([split[r["patient"]] for r in rows], dtype="<U5"),
    }
    return SliceSet(**arrays, config=config, key=key, skipped=skipped)


def _read_cache(path: Path, config: DataConfig, key: str) -> SliceSet | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in _ARRAY_FIELDS}
            skipped = json.loads(str(stored["skipped"]))
    except (OSError, KeyError, ValueError):
        return None  # an unreadable cache entry is rebuilt, not an error
    return SliceSet(**arrays, config=config, key=key, skipped=skipped, from_cache=True)


def _write_cache(path: Path, slices: SliceSet) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **{name: getattr(slices, name) for name in _ARRAY_FIELDS},
                     skipped=np.array(json.dumps(slices.skipped)))


def load_slices(
    root: str | Path | Dataset,
    config: DataConfig = DataConfig(),
    *,
    skip_bad: bool = False,
    cache: Path | None | bool = True,
    progress: Progress | None = None,
) -> SliceSet:
    """Preprocess the selected patients of a dataset (or read the cached result).

    `cache`: True for the default cache folder, a folder, or False to neither read nor write one.
    With `skip_bad`, a patient whose files are bad is left out and named in `SliceSet.skipped`.
    A selection that yields no slice raises HcmbenchError.
    """
    dataset = root if isinstance(root, Dataset) else open_dataset(root, skip_bad=skip_bad)
    groups = validate_groups(config.groups)
    config = dataclasses.replace(config, groups=groups)
    patients = dataset.select(groups)
    if not patients:
        raise HcmbenchError(f"{dataset.root}: no patients of group {', '.join(groups)}")
    key = cache_key(patients, config, skip_bad)
    folder = (cache_dir() if cache is True else Path(cache)) / "slices" if cache else None
    if folder is not None and (folder / f"{key}.npz").exists():
        cached = _read_cache(folder / f"{key}.npz", config, key)
        if cached is not None:
            return cached
    rows: list[dict] = []
    skipped = list(dataset.skipped)
    kept: list[Patient] = []
    for done, patient in enumerate(patients, start=1):
        try:
            patient_rows = preprocess_patient(patient, config)
        except HcmbenchError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
        else:
            rows += patient_rows
            kept.append(patient)
        if progress is not None:
            progress(done, len(patients))
    if not rows:
        raise HcmbenchError(
            f"{dataset.root}: the selection (groups {', '.join(groups)}, frames {', '.join(map(str, config.frames))}) "
            "has no slices"
        )
    slices = _stack(rows, config, key, skipped, split_patients(kept, config.split, config.split_seed))
    if folder is not None:
        _write_cache(folder / f"{key}.npz", slices)
    return slices
