"""Reader for datasets in the ACDC layout (real ACDC or the built-in phantom). No torch here."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from hcmbench.errors import HcmbenchError

# ACDC diagnostic groups, in the order the official training set numbers its patients.
GROUPS: tuple[str, ...] = ("DCM", "HCM", "MINF", "NOR", "RV")
GROUP_NAMES: dict[str, str] = {
    "NOR": "normal",
    "MINF": "previous myocardial infarction",
    "DCM": "dilated cardiomyopathy",
    "HCM": "hypertrophic cardiomyopathy",
    "RV": "abnormal right ventricle",
}
# Mask labels of the ACDC ground truth.
LABEL_BACKGROUND, LABEL_RV, LABEL_MYO, LABEL_LV = 0, 1, 2, 3
_PATIENT_DIR = re.compile(r"^patient\d{3}$")
_INFO_KEYS = {"ED": int, "ES": int, "Group": str, "Height": float, "Weight": float, "NbFrame": int}
_REQUIRED_INFO = ("ED", "ES", "Group")


CINE = "cine"  # a DataConfig frame: every frame of a patient's `_4d` cine file


@dataclass(frozen=True)
class PatientInfo:
    """The fields of a patient's Info.cfg. ED and ES are 1-based frame numbers."""

    ed: int
    es: int
    group: str
    height: float | None = None
    weight: float | None = None
    nb_frame: int | None = None

    def frame_number(self, frame: int | str) -> int:
        """Resolve 'ED', 'ES' or a 1-based frame number to a frame number."""
        if isinstance(frame, str):
            key = frame.upper()
            if key == "ED":
                return self.ed
            if key == "ES":
                return self.es
            if not key.isdigit():
                raise HcmbenchError(f"unknown frame {frame!r}: use ED, ES or a 1-based frame number")
            frame = int(key)
        if frame < 1 or (self.nb_frame is not None and frame > self.nb_frame):
            raise HcmbenchError(f"frame {frame} is outside 1..{self.nb_frame or '?'}")
        return frame


@dataclass(frozen=True)
class Volume:
    """One 3D frame: intensities as float32 (X, Y, slices), physical spacing in mm from the header."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray = field(repr=False)
    orientation: tuple[str, str, str]
    path: Path

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]


@dataclass(frozen=True)
class Frame:
    """A frame's image and, when the dataset has one, its expert mask (uint8, ACDC labels)."""

    number: int
    image: Volume
    mask: np.ndarray | None


@dataclass(frozen=True)
class Patient:
    """A patient folder of the ACDC layout. Nothing is read from the NIfTI files until asked."""

    id: str
    folder: Path
    info: PatientInfo

    @property
    def group(self) -> str:
        return self.info.group

    def image_path(self, frame: int) -> Path:
        return self.folder / f"{self.id}_frame{frame:02d}.nii.gz"

    def mask_path(self, frame: int) -> Path:
        return self.folder / f"{self.id}_frame{frame:02d}_gt.nii.gz"

    @property
    def cine_path(self) -> Path | None:
        path = self.folder / f"{self.id}_4d.nii.gz"
        return path if path.exists() else None

    def cine_frame_count(self) -> int:
        """The number of frames in the `_4d` cine file (from its header); an error when there is none."""
        if self.cine_path is None:
            raise HcmbenchError(f"{self.folder}: frames 'cine' need {self.id}_4d.nii.gz, which is not there")
        try:
            shape = nib.load(str(self.cine_path)).shape
        except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as exc:
            raise HcmbenchError(f"{self.cine_path}: unreadable NIfTI header ({type(exc).__name__}: {exc})") from None
        if len(shape) != 4 or shape[3] < 1:
            raise HcmbenchError(f"{self.cine_path}: expected a 4D cine volume, found shape {shape}")
        return int(shape[3])

    def selected_frames(self, frames: Iterable[int | str]) -> list[tuple[str, int]]:
        """(phase, 1-based number) of each requested frame, in order and once each.

        A frame is 'ED', 'ES' (phase ED/ES), a 1-based number (phase Fnn) or 'cine': every frame of
        the `_4d` file, its ED and ES frames under their own names, the others Fnn.
        """
        chosen: dict[int, str] = {}
        for frame in frames:
            if isinstance(frame, str) and frame.lower() == CINE:
                for number in range(1, self.cine_frame_count() + 1):
                    phase = {self.info.ed: "ED", self.info.es: "ES"}.get(number, f"F{number:02d}")
                    chosen.setdefault(number, phase)
                continue
            number = self.info.frame_number(frame)
            named = isinstance(frame, str) and not frame.isdigit()
            chosen.setdefault(number, frame.upper() if named else f"F{number:02d}")  # type: ignore[union-attr]
        return [(phase, number) for number, phase in chosen.items()]

    def frame_files(self, frame: int | str) -> list[Path]:
        """The files `load_frame(frame)` reads (what a cache key must cover), existing or not."""
        number = self.info.frame_number(frame)
        image = self.image_path(number)
        source = image if image.exists() or self.cine_path is None else self.cine_path
        return [source, self.mask_path(number)]

    def load_frame(self, frame: int | str = "ED") -> Frame:
        """Load a frame ('ED', 'ES' or a 1-based number) with its mask when one exists.

        ED/ES come from their own volumes; any other frame comes from the `_4d` cine file.
        """
        return next(self.load_frames([self.info.frame_number(frame)]))

    def load_frames(self, numbers: Iterable[int]) -> Iterator[Frame]:
        """The frames of 1-based `numbers`, in order, each from its own volume when there is one, else
        from the `_4d` cine file, which is then decompressed once for all of them."""
        cine: tuple[np.ndarray, nib.Nifti1Image] | None = None
        for number in numbers:
            number = self.info.frame_number(number)
            path = self.image_path(number)
            if path.exists():
                image = load_volume(path)
            elif self.cine_path is not None:
                cine = cine or _read_nifti(self.cine_path, ndim=4)
                if number > cine[0].shape[3]:
                    raise HcmbenchError(f"{self.cine_path}: no frame {number} in a volume of shape {cine[0].shape}")
                image = _volume(cine[0][..., number - 1], cine[1], self.cine_path)
            else:
                raise HcmbenchError(f"{path}: no such frame file and no {self.id}_4d.nii.gz cine file")
            mask = None
            mask_path = self.mask_path(number)
            if mask_path.exists():
                mask = load_mask(mask_path, expected_shape=image.shape)
            yield Frame(number, image, mask)


def parse_info(path: Path) -> PatientInfo:
    """Parse an Info.cfg (`Key: value` lines). Missing ED/ES/Group or bad values raise HcmbenchError."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HcmbenchError(f"{path}: missing Info.cfg") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HcmbenchError(f"{path}: cannot read Info.cfg ({exc})") from None
    values: dict[str, object] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, raw = line.partition(":")
        key, raw = key.strip(), raw.strip()
        if not sep or key not in _INFO_KEYS:
            raise HcmbenchError(f"{path}:{number}: malformed Info.cfg line {line.strip()!r}")
        try:
            values[key] = _INFO_KEYS[key](float(raw)) if _INFO_KEYS[key] is int else _INFO_KEYS[key](raw)
        except ValueError:
            raise HcmbenchError(f"{path}:{number}: bad value for {key}: {raw!r}") from None
    missing = [key for key in _REQUIRED_INFO if key not in values]
    if missing:
        raise HcmbenchError(f"{path}: Info.cfg lacks {', '.join(missing)}")
    group = str(values["Group"]).upper()
    if group not in GROUPS:
        raise HcmbenchError(f"{path}: unknown group {values['Group']!r} (expected one of {', '.join(GROUPS)})")
    return PatientInfo(
        ed=int(values["ED"]),  # type: ignore[arg-type]
        es=int(values["ES"]),  # type: ignore[arg-type]
        group=group,
        height=values.get("Height"),  # type: ignore[arg-type]
        weight=values.get("Weight"),  # type: ignore[arg-type]
        nb_frame=values.get("NbFrame"),  # type: ignore[arg-type]
    )


def _read_nifti(path: Path, frame_index: int | None = None, ndim: int = 3) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Read a NIfTI file's array (or frame `frame_index` of a 4D one) eagerly, so that corrupt or
    truncated files fail here, named; the array must have `ndim` dimensions."""
    try:
        image = nib.load(str(path))
        if frame_index is None:
            array = np.asanyarray(image.dataobj)
        else:
            if len(image.shape) != 4 or not 0 <= frame_index < image.shape[3]:
                raise HcmbenchError(f"{path}: no frame {frame_index + 1} in a volume of shape {image.shape}")
            array = np.asanyarray(image.dataobj[..., frame_index])
    except HcmbenchError:
        raise
    except FileNotFoundError:
        raise HcmbenchError(f"{path}: no such file") from None
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise HcmbenchError(f"{path}: corrupt or truncated NIfTI ({type(exc).__name__}: {exc})") from None
    if array.ndim != ndim:
        raise HcmbenchError(f"{path}: expected a {ndim}D volume, found shape {array.shape}")
    return array, image


def _volume(array: np.ndarray, image: nib.Nifti1Image, path: Path) -> Volume:
    """A 3D array of `image` (the file at `path`) as a Volume, its intensities and spacing checked."""
    if not np.isfinite(array).all():
        raise HcmbenchError(f"{path}: contains NaN or infinite intensities")
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    if any(s <= 0 for s in spacing):
        raise HcmbenchError(f"{path}: invalid voxel spacing {spacing}")
    orientation = tuple(nib.aff2axcodes(image.affine))
    return Volume(array.astype(np.float32, copy=False), spacing, image.affine, orientation, path)  # type: ignore[arg-type]


def load_volume(path: str | Path, frame_index: int | None = None) -> Volume:
    """Load a 3D image (or frame `frame_index`, 0-based, of a 4D cine) as float32 with its spacing."""
    path = Path(path)
    array, image = _read_nifti(path, frame_index)
    return _volume(array, image, path)


def load_mask(path: str | Path, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Load an expert mask as uint8; its shape must equal the image's and its labels be 0-3."""
    path = Path(path)
    array, _ = _read_nifti(path)
    if expected_shape is not None and tuple(array.shape) != tuple(expected_shape):
        raise HcmbenchError(f"{path}: mask shape {tuple(array.shape)} differs from image shape {tuple(expected_shape)}")
    labels = np.unique(array)
    if labels.min() < 0 or labels.max() > LABEL_LV or not np.all(labels == np.round(labels)):
        raise HcmbenchError(f"{path}: mask labels {labels.tolist()[:8]} are not ACDC labels 0-3")
    return array.astype(np.uint8)


def find_patient_dirs(root: str | Path) -> list[Path]:
    """The `patientNNN` folders of a dataset root: directly inside it, or under training/ and testing/."""
    root = Path(root)
    if not root.exists():
        raise HcmbenchError(f"{root}: no such data folder")
    if not root.is_dir():
        raise HcmbenchError(f"{root}: not a folder")
    dirs = [d for d in root.iterdir() if d.is_dir() and _PATIENT_DIR.match(d.name)]
    for split in ("training", "testing"):
        if (root / split).is_dir():
            dirs += [d for d in (root / split).iterdir() if d.is_dir() and _PATIENT_DIR.match(d.name)]
    if not dirs:
        raise HcmbenchError(f"{root}: no patientNNN folders (directly or under training/ or testing/)")
    return sorted(dirs, key=lambda d: (d.name, str(d)))


@dataclass
class Dataset:
    """An ACDC-layout dataset: its patients (Info.cfg parsed) and what was skipped as bad."""

    root: Path
    patients: list[Patient]
    skipped: list[str] = field(default_factory=list)

    @property
    def groups_present(self) -> tuple[str, ...]:
        """The ACDC groups that have at least one patient here, in ACDC order."""
        return tuple(g for g in GROUPS if any(p.group == g for p in self.patients))

    def select(self, groups: tuple[str, ...] | list[str] | None = None) -> list[Patient]:
        """Patients of the given groups (all when None); an unknown group raises HcmbenchError."""
        if groups is None:
            return list(self.patients)
        wanted = validate_groups(groups)
        return [p for p in self.patients if p.group in wanted]


def validate_groups(groups: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Upper-case and check group names against ACDC's five."""
    wanted = tuple(dict.fromkeys(g.strip().upper() for g in groups))
    unknown = [g for g in wanted if g not in GROUPS]
    if unknown or not wanted:
        raise HcmbenchError(f"unknown group {', '.join(unknown) or '(none)'}: choose from {', '.join(GROUPS)}")
    return wanted


def open_dataset(root: str | Path, skip_bad: bool = False) -> Dataset:
    """Index a dataset root, parsing every Info.cfg. With `skip_bad`, bad patients are listed, not fatal."""
    root = Path(root)
    patients: list[Patient] = []
    skipped: list[str] = []
    for folder in find_patient_dirs(root):
        try:
            info = parse_info(folder / "Info.cfg")
        except HcmbenchError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
            continue
        patients.append(Patient(folder.name, folder, info))
    if not patients:
        raise HcmbenchError(f"{root}: no readable patients ({len(skipped)} skipped)")
    return Dataset(root, patients, skipped)


def read_header(path: str | Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Shape and voxel spacing of a NIfTI file from its header alone (no voxel data read)."""
    path = Path(path)
    try:
        header = nib.load(str(path)).header
    except FileNotFoundError:
        raise HcmbenchError(f"{path}: no such file") from None
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise HcmbenchError(f"{path}: corrupt or truncated NIfTI ({type(exc).__name__}: {exc})") from None
    return tuple(int(n) for n in header.get_data_shape()), tuple(float(z) for z in header.get_zooms())
