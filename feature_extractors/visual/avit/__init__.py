"""HiCMAE's audio-visual encoder (Sun et al., Information Fusion 2024, ``sunlicai/HiCMAE``): an
independent implementation that loads the official checkpoints and matches the official code to
within float rounding (golden tests in fp32 and fp64 against outputs of the official code).

Public API::

    model, report = load_hicmae(path)               # official fine-tuned or pretraining file
    cfg, heads_source = infer_config(state_dict, args)
    save_hicmae(model, path)                        # the official layout
    fbank = hicmae_fbank(waveform_16k)              # the official audio front end (numpy)
"""
from .checkpoints import HiCMAELoadReport, checkpoint_args, infer_config, load_hicmae, save_hicmae
from .model import PARTS, AudioVisionTransformer, AViTConfig

__all__ = ["PARTS", "AViTConfig", "AudioVisionTransformer", "HiCMAELoadReport", "checkpoint_args", "infer_config",
           "load_hicmae", "save_hicmae"]
