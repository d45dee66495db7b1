"""TPSBT, the encoder of SVFAP (Sun et al., IEEE TAC 2024, ``sunlicai/SVFAP``): an independent
implementation that loads the official checkpoints and matches the official code to within float
rounding (golden tests in fp32 and fp64 against outputs of the official code).

The released configuration (``svfap_base_patch16_160``): input ``[B, 3, 16, 160, 160]``
(ImageNet mean/std), 2x16x16 tubelets -> 8 x 100 tokens plus the fixed sin-cos table; stage 1:
12 ViT blocks (dim 512, 8 heads, q/v biases, LayerNorm eps 1e-6); stages 2 and 3: a temporal
``Conv1d`` (kernel = stride = 2: 8 -> 4 -> 2 steps), a spatial bottleneck of 8 tokens per step,
then 5 and 2 cross-self blocks on the bottleneck tokens and one that restores the 100 tokens per
step; feature ``fc_norm(mean of the last 200 tokens)``.

Public API::

    model, report = load_svfap(path)                # official fine-tuned or pretraining file
    cfg, heads_source = infer_config(state_dict, args)
    save_svfap(model, path)                         # the official layout
"""
from .checkpoints import SVFAPLoadReport, checkpoint_args, infer_config, load_svfap, save_svfap
from .model import TPSBT, TPSBTConfig, count_parameters, init_weights

__all__ = ["TPSBT", "TPSBTConfig", "SVFAPLoadReport", "checkpoint_args", "count_parameters", "infer_config",
           "init_weights", "load_svfap", "save_svfap"]
