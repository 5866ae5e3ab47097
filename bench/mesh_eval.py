"""Face-mesh accuracy, pose error, jitter and cost (``pipelines.faces.mesh``), against dlib.

Accuracy: the mesh's 68-point subset (:data:`pipelines.faces.regions.IBUG_68`) against an
independent landmarker, dlib's 68-point shape predictor (``shape_predictor_68_face_landmarks.dat``
from ``face_recognition_models``, seeded by dlib's own HOG face detector), as the normalised mean
error (NME: mean point distance over dlib's outer-eye-corner distance), for all 68 points and for
the inner 51 (without the jaw contour, which the two annotations define differently).

Scenes: scikit-image's astronaut, and, when available, the two sample photos inside the
``insightface`` source package (a group of six, a 112 px portrait; fetched with
``pip download --no-deps --no-binary :all: insightface==2.1`` into a temporary directory and
read from the archive in memory), each as is, mirrored, rotated by +-15 and +-30 degrees, and
scaled to 60 % and 150 %.

Pose: against the known in-plane rotations (the roll must change by exactly the rotation, yaw
and pitch not at all) and mirroring (yaw and roll change sign, pitch stays). Consistency: each
variant's mesh mapped back into the original image, against the original's mesh (NME).

Jitter: a 720p still clip of the astronaut with sensor noise and JPEG compression, through
:class:`~pipelines.faces.mesh_tracking.MeshTracker`: RMS of the points around their mean, raw
and smoothed.

Cost: per face, median of interleaved rounds: the mesh (refined + iris, as ``detect``), one
tracking pass (no iris), against dlib's HOG detection + 68-point predictor, and against a
CenterFace detection of the same image, all in the same run.

Run: ``.venv/bin/python bench/mesh_eval.py [--insightface PATH | --no-insightface]``
(needs the ``eval`` extra: ``pip install -e '.[eval]'``). Prints markdown tables and the load.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_bench import timed

from pipelines.faces import default_detector
from pipelines.faces.canonical import canonical_face_model
from pipelines.faces.detector import Face
from pipelines.faces.mesh import FaceMesh, FaceMesher, Roi, default_mesher
from pipelines.faces.mesh_tracking import MeshTracker, MeshTrackerConfig
from pipelines.faces.regions import IBUG_68

F64 = NDArray[np.float64]
INSIGHTFACE = "insightface==2.1"
INSIGHTFACE_IMAGES = ("t1.jpg", "Tom_Hanks_54745.png")


@dataclass(frozen=True)
class Variant:
    name: str
    image: NDArray[np.uint8]
    to_original: F64  # 2x3 affine: variant pixels -> original pixels
    mirrored: bool = False
    rotation: float = 0.0  # counter-clockwise degrees (OpenCV's sign)


def dlib_models() -> tuple[Any, Any]:
    """dlib's HOG face detector and 68-point predictor (the ``eval`` extra)."""
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the eval extra is missing: pip install -e '.[eval]'")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    return dlib.get_frontal_face_detector(), predictor


def insightface_images(path: str | None, fetch: bool) -> dict[str, NDArray[np.uint8]]:
    """The sample photos of the insightface source package, decoded in memory."""
    out: dict[str, NDArray[np.uint8]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        archive: Path | None = Path(path) if path else None
        if archive is None and fetch:
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
            cmd += ["--no-binary", ":all:", INSIGHTFACE, "-d", tmp]
            if subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0:
                archive = next(Path(tmp).glob("insightface-*"), None)
        if archive is None or not archive.is_file():
            return out
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if "/data/images/" in member.name and name in INSIGHTFACE_IMAGES:
                    handle = tar.extractfile(member)
                    assert handle is not None
                    buf = np.frombuffer(handle.read(), np.uint8)
                    out[name] = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)
    return out


def variants(image: NDArray[np.uint8]) -> list[Variant]:
    h, w = image.shape[:2]
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    out = [Variant("original", image, ident)]
    flip = np.array([[-1.0, 0, w - 1], [0, 1.0, 0]])
    out.append(Variant("mirrored", np.ascontiguousarray(image[:, ::-1]), flip, mirrored=True))
    for degrees in (15.0, -15.0, 30.0, -30.0):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
        rotated = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        back = cv2.invertAffineTransform(m)
        out.append(Variant(f"rotated {degrees:+.0f}", rotated, back, rotation=degrees))
    for scale in (0.6, 1.5):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        scaled = cv2.resize(image, None, fx=scale, fy=scale, interpolation=interp)
        back = np.array([[1 / scale, 0, 0], [0, 1 / scale, 0]])
        out.append(Variant(f"scaled {scale:.0%}", scaled, back))
    return out


def apply(m: F64, pts: F64) -> F64:
    return np.asarray(pts @ m[:, :2].T + m[:, 2], dtype=np.float64)


def mirror_map() -> NDArray[np.intp]:
    v = canonical_face_model().astype(np.float64)
    return np.asarray(
        np.linalg.norm((v * [-1, 1, 1])[:, None] - v[None], axis=2).argmin(axis=1), np.intp
    )


@dataclass
class FaceResult:
    scene: str
    variant: str
    face: int  # index of the face in the original image
    mesh: FaceMesh
    dlib: F64 | None


def dlib_points(detector: Any, predictor: Any, bgr: NDArray[np.uint8]) -> list[F64]:
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    return [
        np.array([[p.x, p.y] for p in predictor(rgb, r).parts()], dtype=np.float64)
        for r in detector(rgb, 1)
    ]


def evaluate(
    scenes: dict[str, list[Variant]], mesher: FaceMesher, dlib_det: Any, dlib_pred: Any
) -> list[FaceResult]:
    det = default_detector()
    results: list[FaceResult] = []
    for scene, scene_variants in scenes.items():
        originals = det.detect(scene_variants[0].image)
        centres = np.array(
            [[(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2] for f in originals]
        )
        for var in scene_variants:
            dlib_faces = dlib_points(dlib_det, dlib_pred, var.image)
            for face in det.detect(var.image):
                mesh = mesher.fit(var.image, face)
                if not mesh.is_face:
                    continue
                centre = apply(var.to_original, mesh.points[[4], :2].astype(np.float64))[0]
                if not len(centres):
                    continue
                dist = np.hypot(*(centres - centre).T)
                k = int(dist.argmin())
                if dist[k] > 0.5 * originals[k].width:
                    continue  # a face not found in the original
                match = None
                for pts in dlib_faces:
                    c = pts.mean(axis=0)
                    if face.box[0] < c[0] < face.box[2] and face.box[1] < c[1] < face.box[3]:
                        match = pts
                results.append(FaceResult(scene, var.name, k, mesh, match))
    return results


def nme(mesh: FaceMesh, ref: F64, subset: slice) -> float:
    pts = mesh.points[list(IBUG_68), :2].astype(np.float64)
    iod = float(np.hypot(*(ref[36] - ref[45])))
    return float(np.mean(np.hypot(*(pts[subset] - ref[subset]).T)) / iod)


def angle_diff(a: float, b: float) -> float:
    return (a - b + 180.0) % 360.0 - 180.0


def report(results: list[FaceResult], var_index: dict[str, Variant]) -> None:
    print("### Mesh vs dlib 68-point predictor (NME, % of outer-eye-corner distance)\n")
    print("| variant | faces (dlib found) | NME 68 | NME inner 51 | consistency NME |")
    print("|---|---|---|---|---|")
    mir = mirror_map()
    base = {(r.scene, r.face): r for r in results if r.variant == "original"}
    for name in dict.fromkeys(r.variant for r in results):
        rows = [r for r in results if r.variant == name]
        with_dlib = [r for r in rows if r.dlib is not None]
        n68 = [nme(r.mesh, r.dlib, slice(0, 68)) for r in with_dlib if r.dlib is not None]
        n51 = [nme(r.mesh, r.dlib, slice(17, 68)) for r in with_dlib if r.dlib is not None]
        cons = []
        for r in rows:
            b = base.get((r.scene, r.face))
            if b is None:
                continue
            var = var_index[f"{r.scene}/{name}"]
            back = apply(var.to_original, r.mesh.points[:, :2].astype(np.float64))
            ref = b.mesh.points[:, :2].astype(np.float64)
            if var.mirrored:  # the mirrored face's point i is the original's point mir[i]
                ref = ref[mir]
            iod = float(np.hypot(*(ref[33] - ref[263])))
            cons.append(float(np.mean(np.hypot(*(back - ref).T)) / iod))
        print(
            f"| {name} | {len(rows)} ({len(with_dlib)}) | {pct(n68)} | {pct(n51)} | "
            f"{pct(cons) if name != 'original' else '-'} |"
        )

    print("\n### Pose error against known transforms (degrees, mean absolute / max)\n")
    print("| variant | faces | roll error | yaw change | pitch change |")
    print("|---|---|---|---|---|")
    for name in dict.fromkeys(r.variant for r in results):
        if name == "original" or name.startswith("scaled"):
            continue
        roll_e, yaw_e, pitch_e = [], [], []
        for r in results:
            b = base.get((r.scene, r.face))
            if r.variant != name or b is None:
                continue
            var = var_index[f"{r.scene}/{name}"]
            p, q = r.mesh.pose, b.mesh.pose
            if var.mirrored:
                roll_e.append(abs(p.roll + q.roll))
                yaw_e.append(abs(p.yaw + q.yaw))
                pitch_e.append(abs(p.pitch - q.pitch))
            else:
                roll_e.append(abs(angle_diff(p.roll - q.roll, -var.rotation)))
                yaw_e.append(abs(p.yaw - q.yaw))
                pitch_e.append(abs(p.pitch - q.pitch))
        print(f"| {name} | {len(roll_e)} | {deg(roll_e)} | {deg(yaw_e)} | {deg(pitch_e)} |")


def pct(values: list[float]) -> str:
    return f"{100 * statistics.mean(values):.2f}" if values else "n/a"


def deg(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} / {max(values):.2f}" if values else "n/a"


def jitter(mesher: FaceMesher) -> None:
    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    frame = np.full((720, 1280, 3), (120, 110, 100), np.uint8)
    frame[:, 280:1000] = cv2.resize(astronaut, (720, 720), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(90):
        noise = rng.normal(0.0, 3.0, frame.shape).round().astype(np.int16)
        noisy = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        _, enc = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 85])
        frames.append(np.asarray(cv2.imdecode(enc, cv2.IMREAD_COLOR), np.uint8))
    print("\n### Jitter on a still face at 720p (90 frames, noise sigma 3 + JPEG 85)\n")
    print("| tracker | RMS jitter (px) | pose jitter (deg, yaw/pitch/roll SD) | detections |")
    print("|---|---|---|---|")
    for name, cfg in (
        ("raw mesh (no smoothing)", MeshTrackerConfig(min_cutoff=1e6, beta=0.0)),
        ("One Euro (default)", MeshTrackerConfig()),
    ):
        tracker = MeshTracker(default_detector(), mesher, cfg)
        pts, poses = [], []
        for i, f in enumerate(frames):
            (tracked,) = tracker.update(i, f)
            pts.append(tracked.mesh.points[:, :2].astype(np.float64))
            p = tracked.mesh.pose
            poses.append((p.yaw, p.pitch, p.roll))
        stack = np.array(pts[10:])
        rms = float(np.sqrt(((stack - stack.mean(axis=0)) ** 2).sum(axis=2).mean()))
        sd = np.array(poses[10:]).std(axis=0)
        print(
            f"| {name} | {rms:.3f} | {sd[0]:.2f} / {sd[1]:.2f} / {sd[2]:.2f} | "
            f"{tracker.detections_run} |"
        )


def cost(mesher: FaceMesher, dlib_det: Any, dlib_pred: Any) -> None:
    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    det = default_detector()
    face: Face = det.detect(astronaut)[0]
    roi = Roi.from_points(mesher.fit(astronaut, face).points)
    rgb = np.ascontiguousarray(astronaut[:, :, ::-1])
    rect = dlib_det(rgb, 1)[0]
    fns = [
        lambda: det.detect(astronaut),
        lambda: mesher.fit(astronaut, face),
        lambda: mesher.fit_roi(astronaut, roi, iris=False),
        lambda: [dlib_pred(rgb, r) for r in dlib_det(rgb, 1)],
        lambda: dlib_pred(rgb, rect),
    ]
    names = [
        "CenterFace detection (512x512)",
        "mesh fit: 2 passes + iris (detect with mesh)",
        "mesh tracking pass (no iris)",
        "dlib HOG detection + 68 points",
        "dlib 68 points only",
    ]
    ms = timed(fns, repeat=15)
    print("\n### Cost per face (median of 15 interleaved rounds, one process)\n")
    print("| step | ms | x CenterFace detection |")
    print("|---|---|---|")
    for name, value in zip(names, ms, strict=True):
        print(f"| {name} | {value:.1f} | {value / ms[0]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--insightface", help="path of an insightface sdist (tar.gz)")
    parser.add_argument("--no-insightface", action="store_true", help="astronaut only")
    args = parser.parse_args()
    mesher = default_mesher()
    dlib_det, dlib_pred = dlib_models()
    scenes = {"astronaut": np.ascontiguousarray(data.astronaut()[:, :, ::-1])}
    extra = {} if args.no_insightface else insightface_images(args.insightface, fetch=True)
    scenes.update({f"insightface {k}": v for k, v in extra.items()})
    scene_variants = {name: variants(img) for name, img in scenes.items()}
    var_index = {f"{s}/{v.name}": v for s, vs in scene_variants.items() for v in vs}
    print(f"scenes: {', '.join(scenes)}; cv2 {cv2.__version__}; threads {cv2.getNumThreads()}\n")
    results = evaluate(scene_variants, mesher, dlib_det, dlib_pred)
    report(results, var_index)
    jitter(mesher)
    cost(mesher, dlib_det, dlib_pred)
    print(f"\nload average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
