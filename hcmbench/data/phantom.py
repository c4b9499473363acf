"""Synthetic short-axis cine-MRI phantom in the ACDC layout, so nothing has to be downloaded.

Each patient gets a random heart drawn from its group's anatomy (sizes in mm at end-diastole), a
static thorax around it (body wall, organs, lungs, liver, aorta) and a bSSFP-like look: bright
blood, dark myocardium, bright fat, partial-volume blur, a smooth bias field and Rician noise.
Coordinates in a slice are mm from the image centre: y along the first array axis (displayed as
rows, anterior at the top), x along the second (columns); the RV sits above/right of the LV, the
lungs to the left and the liver to the lower right, as in the stored ACDC arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from hcmbench.atomic import atomic_folder
from hcmbench.data.acdc import GROUPS, LABEL_BACKGROUND, LABEL_LV, LABEL_MYO, LABEL_RV
from hcmbench.errors import HcmbenchError

SLICE_THICKNESS_MM = 10.0
# Relative bSSFP signal of each tissue (blood = 1).
BLOOD, MYOCARDIUM, FAT, MUSCLE, SOFT_TISSUE, LIVER, LUNG = 1.0, 0.22, 0.95, 0.28, 0.5, 0.5, 0.1


@dataclass(frozen=True)
class PhantomConfig:
    """Settings of `write_phantom`: patients per group, seed, whether to write 4D cines, groups."""

    patients_per_group: int = 20
    seed: int = 0
    cine: bool = False
    groups: tuple[str, ...] = GROUPS


@dataclass(frozen=True)
class _Anatomy:
    """Per-group (low, high) ranges drawn uniformly per patient; mm at mid-ventricle, at ED."""

    lv_diameter: tuple[float, float]  # LV cavity
    wall: tuple[float, float]  # LV wall thickness away from the septum
    septal_excess: tuple[float, float]  # extra thickness of the wall facing the RV, / wall
    shortening: tuple[float, float]  # fractional shortening of the endocardial radius, ED -> ES
    rv_depth: tuple[float, float]  # radial depth of the RV crescent
    rv_shortening: tuple[float, float]
    infarct: bool = False


_ANATOMY = {
    "NOR": _Anatomy((45, 55), (8, 10), (0.0, 0.1), (0.30, 0.38), (20, 26), (0.40, 0.50)),
    "HCM": _Anatomy((36, 44), (15, 19), (0.3, 0.7), (0.58, 0.72), (16, 22), (0.40, 0.50)),
    "DCM": _Anatomy((62, 76), (5.5, 7), (0.0, 0.1), (0.06, 0.14), (20, 26), (0.15, 0.25)),
    "MINF": _Anatomy((54, 62), (8, 10), (0.0, 0.1), (0.14, 0.22), (20, 26), (0.30, 0.40), True),
    "RV": _Anatomy((44, 52), (7, 9), (0.0, 0.1), (0.28, 0.36), (34, 44), (0.15, 0.25)),
}


@dataclass(frozen=True)
class _Patient:
    """Everything drawn for one patient: acquisition, Info.cfg values and the ED heart geometry."""

    number: int
    group: str
    shape: tuple[int, int, int]
    spacing: float
    n_frames: int
    es: int
    height: float
    weight: float
    vmax: float
    noise: float
    heart: np.ndarray  # (y, x) of the LV centre at the base
    drift: np.ndarray  # (y, x) shift of the LV centre from base to apex
    lv_radius: float
    wall: float
    septal_excess: float
    shortening: float
    rv_depth: float
    rv_shortening: float
    rv_angle: float  # direction LV -> RV, radians, atan2(y, x)
    infarct_angle: float
    infarct_width: float  # radians; 0 for no infarct
    wobble: np.ndarray  # (3, 2): amplitude and phase of harmonics 2..4 of the heart outline
    fat_angle: float  # where the epicardial fat is thickest
    body: np.ndarray  # centre y, x, semi-axes y, x, angle, fat and muscle thickness, wobble phase


def _draw_patient(number: int, group: str, rng: np.random.Generator) -> _Patient:
    """Draw acquisition, Info.cfg values and heart geometry of one patient of `group`."""
    a = _ANATOMY[group]
    u = rng.uniform
    height = float(round(rng.normal(170, 9)))
    n_frames = int(rng.integers(20, 36))
    heart = np.array([u(-20, 5), u(-45, -15)])
    body_axes = (u(120, 145), u(210, 270))
    return _Patient(
        number=number, group=group,
        shape=(int(rng.integers(190, 261)), int(rng.integers(220, 261)), int(rng.integers(8, 11))),
        spacing=round(u(1.3, 1.9), 4), n_frames=n_frames, es=int(rng.integers(8, 16)),
        height=height, weight=float(round(u(20, 32) * (height / 100) ** 2)),
        vmax=float(np.exp(u(np.log(300), np.log(4000)))), noise=u(0.01, 0.03),
        heart=heart, drift=rng.normal(0, 4, 2),
        lv_radius=u(*a.lv_diameter) / 2, wall=u(*a.wall), septal_excess=u(*a.septal_excess),
        shortening=u(*a.shortening), rv_depth=u(*a.rv_depth), rv_shortening=u(*a.rv_shortening),
        rv_angle=float(np.deg2rad(u(-75, -35))), infarct_angle=u(-np.pi, np.pi),
        infarct_width=float(np.deg2rad(u(70, 110))) if a.infarct else 0.0,
        wobble=np.stack([u(0, 0.04, 3), u(-np.pi, np.pi, 3)], 1), fat_angle=u(-np.pi, np.pi),
        body=np.array([heart[0] + body_axes[0] - u(75, 95), heart[1] + u(40, 70), *body_axes,
                       np.deg2rad(u(-20, 5)), u(5, 14), u(8, 14), u(-np.pi, np.pi)]),
    )


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ay: float, ax: float,
             angle: float = 0.0) -> np.ndarray:
    """Normalised elliptic radius (< 1 inside) of a rotated ellipse with semi-axes ay, ax in mm."""
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    return np.hypot((c * dy - s * dx) / ay, (s * dy + c * dx) / ax)


def _heart(p: _Patient, z: int, c: float, yy: np.ndarray, xx: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of one slice at contraction `c` (0 = ED, 1 = ES): LV/RV cavity, myocardium and rims."""
    s = z / (p.shape[2] - 1)  # 0 at the base, 1 at the apex
    taper = (1 - (max(s - 0.2, 0) / 0.85) ** 2) ** 0.5
    cy, cx = (float(v) for v in p.heart + s * p.drift)
    rho, th = np.hypot(yy - cy, xx - cx), np.arctan2(yy - cy, xx - cx)
    harmonics = enumerate(p.wobble.tolist(), 2)
    wob = 1 + sum(a * np.cos(k * th + ph + 0.3 * k * s) for k, (a, ph) in harmonics)
    sector = 0.0
    if p.infarct_width:
        half = np.cos(p.infarct_width / 2)
        sector = np.clip(3 * (np.cos(th - p.infarct_angle) - half) / (1 - half), 0, 1)
    septum = np.maximum(np.cos(th - p.rv_angle), 0) ** 2
    wall = p.wall * (0.75 + 0.25 * taper) * (1 + p.septal_excess * septum) * (1 - 0.55 * sector)
    endo_ed = p.lv_radius * taper * wob
    epi_ed = endo_ed + wall
    # ES: the endocardium moves in (less where infarcted); the epicardium follows so that the
    # myocardial area of every angular sector is conserved.
    endo = endo_ed * (1 - c * p.shortening * (1 - 0.85 * sector))
    epi = np.sqrt(endo**2 + epi_ed**2 - endo_ed**2)

    # RV: ellipse beside the LV along rv_angle; its part outside the LV epicardium is the crescent.
    r_out = p.lv_radius * taper + p.wall
    depth = p.rv_depth * float(np.clip(1 - (s / 0.95) ** 2, 0, 1)) * (1 - c * p.rv_shortening)
    ca, sa = np.cos(p.rv_angle), np.sin(p.rv_angle)
    along, across = (xx - cx) * ca + (yy - cy) * sa, -(xx - cx) * sa + (yy - cy) * ca
    d, b, a = 0.75 * r_out + 0.2 * depth, 0.25 * r_out + depth, 1.2 * r_out + 0.3 * depth
    rv_q = np.hypot((along - d) / b, across / a)
    lv_myo = rho < epi
    rv = (rv_q < 1) & ~lv_myo
    rv_wall = (rv_q < 1 + 2 / b) & ~lv_myo & ~rv
    fat_rim = 5 * np.maximum(np.cos(th - p.fat_angle), 0) ** 3
    fat = ((rho < epi + fat_rim) | (rv_q < 1 + (2 + fat_rim) / b)) & ~lv_myo & ~rv & ~rv_wall
    papillary = np.zeros_like(rv)
    if 0.25 < s < 0.8:  # two papillary muscles opposite the RV, inside the LV cavity label
        r = 0.6 * p.lv_radius * taper * (1 - c * p.shortening)
        for side in (-0.7, 0.7):
            ang = p.rv_angle + np.pi + side
            py, px = cy + r * np.sin(ang), cx + r * np.cos(ang)
            papillary |= np.hypot(yy - py, xx - px) < 0.12 * p.lv_radius
    lv = rho < endo
    return {"lv": lv, "myo": lv_myo & ~lv, "rv": rv, "rv_wall": rv_wall, "fat": fat,
            "papillary": papillary & lv, "trabecular": lv & (rho > 0.8 * endo)}


def _labels(h: dict[str, np.ndarray]) -> np.ndarray:
    """ACDC label map of a slice from the masks of `_heart`."""
    lab = np.full(h["lv"].shape, LABEL_BACKGROUND, np.uint8)
    lab[h["rv"]], lab[h["myo"]], lab[h["lv"]] = LABEL_RV, LABEL_MYO, LABEL_LV
    return lab


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-variance smooth random field (organ texture, flow inhomogeneity)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape, np.float32), sigma, truncate=3.0)
    return f / (f.std() + 1e-6)


def _dots(rng: np.random.Generator, region: np.ndarray, n: int, sigma: float) -> np.ndarray:
    """Small bright blobs (vessels) at `n` random pixels of `region`, peak about 1."""
    img = np.zeros(region.shape, np.float32)
    idx = np.flatnonzero(region)
    if idx.size:
        img.flat[rng.choice(idx, size=min(n, idx.size), replace=False)] = 2 * np.pi * sigma**2
    return np.clip(ndimage.gaussian_filter(img, sigma), 0, 1)


def _thorax(p: _Patient, z: int, yy: np.ndarray, xx: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """Static tissue intensities of one slice around the heart: body wall, lungs, liver, vessels."""
    s = z / (p.shape[2] - 1)
    hy, hx = (float(v) for v in p.heart + s * p.drift)
    by, bx, ay, ax, angle, fat_t, muscle_t, phase = p.body.tolist()
    phi = np.arctan2(yy - by, xx - bx)
    q = _ellipse(yy, xx, by, bx, ay, ax, angle) * (1 + 0.04 * np.cos(3 * phi + phase))
    inside_depth = np.hypot(yy - by, xx - bx) * (1 / np.maximum(q, 1e-6) - 1)  # mm to the skin
    fat_t = fat_t * (1 + 0.6 * np.cos(phi - phase) ** 2)  # subcutaneous fat is uneven
    img = np.where(q < 1, FAT, 0.0).astype(np.float32)
    img[inside_depth > fat_t] = MUSCLE
    interior = inside_depth > fat_t + muscle_t
    # Abdominal organs and bowel: a mosaic of brighter and darker patches with fat in between.
    texture, seams = _smooth_noise(rng, q.shape, 5.0), _smooth_noise(rng, q.shape, 6.0)
    organs = SOFT_TISSUE + 0.2 * np.tanh(2 * texture)
    organs[np.abs(seams) < 0.08] = FAT
    img[interior] = organs[interior]
    lungs = (_ellipse(yy, xx, hy + 20, hx - 65, 100 * (1 - 0.3 * s), 70, -0.4) < 1) | (
        _ellipse(yy, xx, hy - 35, hx + 80, 30 * (1 - 0.6 * s), 55, 0.3) < 1)
    lungs &= interior & (inside_depth > fat_t + muscle_t + 3)
    img[lungs] = LUNG + 0.5 * _dots(rng, lungs, 25, 0.8)[lungs]
    liver = interior & (_ellipse(yy, xx, hy + 75 - 25 * s, hx + 95, 80 * min(0.3 + s, 1), 85) < 1)
    img[liver] = LIVER * (1 + 0.05 * texture[liver]) + 0.4 * _dots(rng, liver, 12, 1.5)[liver]
    img[_ellipse(yy, xx, hy + 45, hx + 45, 11, 11) < 1] = 0.95  # descending aorta
    return img


def _render(p: _Patient, c: float, thorax: list[np.ndarray], trabeculae: np.ndarray,
            bias: np.ndarray, yy: np.ndarray, xx: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Float image (before scaling) and uint8 labels of the volume at contraction `c`."""
    img = np.empty(p.shape, np.float32)
    lab = np.empty(p.shape, np.uint8)
    flow = _smooth_noise(rng, yy.shape, 4.0)
    for z in range(p.shape[2]):
        h = _heart(p, z, c, yy, xx)
        sl = thorax[z].copy()
        sl[h["fat"]], sl[h["rv_wall"]], sl[h["myo"]] = FAT, MUSCLE, MYOCARDIUM
        blood = h["lv"] | h["rv"]
        sl[blood] = BLOOD * (1 + 0.04 * flow[blood]) * np.where(h["rv"][blood], 0.92, 1.0)
        sl[h["papillary"] | (h["trabecular"] & trabeculae[z])] = MYOCARDIUM
        sl = ndimage.gaussian_filter(sl, 0.8) * bias  # partial volume, then coil sensitivity
        noise = rng.standard_normal((2, *sl.shape), np.float32) * p.noise
        img[:, :, z] = np.hypot(sl + noise[0], noise[1])  # Rician magnitude
        lab[:, :, z] = _labels(h)
    return img, lab


def _contraction(frame: int, es: int, n_frames: int) -> float:
    """Contraction (0 at ED = frame 1, 1 at ES) of a 1-based frame: cosine systole, quick refill."""
    if frame <= es:
        return 0.5 * (1 - math.cos(math.pi * (frame - 1) / (es - 1)))
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (frame - es) / (0.6 * (n_frames - es + 1)))))


def _save(arr: np.ndarray, p: _Patient, path: Path) -> None:
    """Write `arr` with an ACDC-like header: affine diag(-s, -s, thickness), sform_code 2."""
    affine = np.diag([-p.spacing, -p.spacing, SLICE_THICKNESS_MM, 1.0])
    img = nib.Nifti1Image(arr, affine)
    img.header.set_data_dtype(arr.dtype)
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=0)
    nib.save(img, path)


def _write_patient(folder: Path, p: _Patient, seed: int, rng: np.random.Generator,
                   cine: bool) -> None:
    """Write Info.cfg, the ED/ES volumes and masks (and the 4D cine) of one patient."""
    folder.mkdir()
    name = f"patient{p.number:03d}"
    (folder / "Info.cfg").write_text(
        f"ED: 1\nES: {p.es}\nGroup: {p.group}\nHeight: {p.height:.1f}\n"
        f"NbFrame: {p.n_frames}\nWeight: {p.weight:.1f}\n")
    ys = (np.arange(p.shape[0]) - p.shape[0] / 2) * p.spacing
    xs = (np.arange(p.shape[1]) - p.shape[1] / 2) * p.spacing
    yy, xx = np.meshgrid(ys.astype(np.float32), xs.astype(np.float32), indexing="ij")
    thorax = [_thorax(p, z, yy, xx, rng) for z in range(p.shape[2])]
    trabeculae = np.stack([_smooth_noise(rng, yy.shape, 1.0) > 1.2 for _ in thorax])
    coef = rng.normal(0, 0.2, 5)
    ny, nx = yy / 150, xx / 150
    bias = np.exp(coef[0] * ny + coef[1] * nx + coef[2] * ny * nx + coef[3] * ny**2
                  + coef[4] * nx**2 - 0.3 * ny).astype(np.float32)
    frames = range(1, p.n_frames + 1) if cine else (1, p.es)
    scale = None
    volumes: dict[int, np.ndarray] = {}
    for f in frames:
        img, lab = _render(p, _contraction(f, p.es, p.n_frames), thorax, trabeculae, bias, yy, xx,
                           np.random.default_rng([seed, p.number, f]))
        scale = scale if scale is not None else p.vmax / float(img.max())  # frame 1 comes first
        volumes[f] = np.clip(np.rint(img * scale), 0, np.iinfo(np.int16).max).astype(np.int16)
        if f in (1, p.es):
            _save(volumes[f], p, folder / f"{name}_frame{f:02d}.nii.gz")
            _save(lab, p, folder / f"{name}_frame{f:02d}_gt.nii.gz")
    if cine:
        _save(np.stack([volumes[f] for f in frames], axis=-1), p, folder / f"{name}_4d.nii.gz")


def _validate(config: PhantomConfig) -> list[str]:
    """Check `config` and return its groups in ACDC numbering order."""
    if config.patients_per_group < 1:
        raise HcmbenchError(
            f"patients_per_group must be at least 1, got {config.patients_per_group}")
    for g in config.groups:
        if g not in GROUPS:
            raise HcmbenchError(f"unknown group {g!r}; expected some of {', '.join(GROUPS)}")
    groups = [g for g in GROUPS if g in config.groups]
    if not groups:
        raise HcmbenchError("no groups selected for the phantom")
    if len(groups) * config.patients_per_group > 999:
        raise HcmbenchError("the phantom holds at most 999 patients (patientNNN)")
    return groups


def write_phantom(out: str | Path, config: PhantomConfig = PhantomConfig(),
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a synthetic dataset in the ACDC layout to `out/training/patientNNN/` and return `out`.

    Patients are numbered from 001 in `GROUPS` order, `config.patients_per_group` per group; the
    same seed gives byte-identical arrays. Built in a temporary sibling folder and renamed into
    place, so `out` is never left half-written. Raises HcmbenchError if `out` exists and is not an
    empty folder, or if `config` is invalid. `progress(done, total)` is called after each patient.
    """
    out = Path(out)
    groups = _validate(config)
    total = len(groups) * config.patients_per_group
    with atomic_folder(out) as tmp:
        (tmp / "training").mkdir()
        (tmp / "README.md").write_text(
            "# hcmbench synthetic phantom\n\nThis is hcmbench's synthetic cardiac cine-MRI phantom "
            f"in the ACDC layout ({total} patients, groups {', '.join(groups)}, seed "
            f"{config.seed}). It is NOT real patient data: hearts, thorax, noise and Info.cfg "
            "values are drawn at random, for trying the pipeline without downloading ACDC.\n")
        for i in range(total):
            number = i + 1
            rng = np.random.default_rng([config.seed, number])
            p = _draw_patient(number, groups[i // config.patients_per_group], rng)
            folder = tmp / "training" / f"patient{number:03d}"
            _write_patient(folder, p, config.seed, rng, config.cine)
            if progress is not None:
                progress(number, total)
    return out
