"""Networks: DSIFN and its VGG16 encoder; the baselines FC-EF, FC-Siam-conc/diff and CDNet.

:mod:`dsifn.models.registry` is the table ``model.name`` selects from.
"""

from dsifn.models.cdnet import CDNet, CDNetConfig
from dsifn.models.dsifn import DSIFN, DSIFNConfig, DSIFNOutput
from dsifn.models.fc_ef import FCEF, FCEFConfig
from dsifn.models.fc_siam_conc import FCSiamConc, FCSiamConcConfig
from dsifn.models.fc_siam_diff import FCSiamDiff, FCSiamDiffConfig
from dsifn.models.outputs import ChangeOutput
from dsifn.models.registry import (
    MODEL_NAMES,
    MODELS,
    ChangeNetwork,
    ModelConfig,
    build_network,
    model_config,
    model_entry,
)
from dsifn.models.vgg import VGG16_IMAGENET1K_V1, VGG16Encoder, WeightsRecord
from dsifn.normalization import CAFFE_BGR, IMAGENET_RGB, Normalization

__all__ = [
    "CAFFE_BGR",
    "DSIFN",
    "FCEF",
    "IMAGENET_RGB",
    "MODELS",
    "MODEL_NAMES",
    "VGG16_IMAGENET1K_V1",
    "CDNet",
    "CDNetConfig",
    "ChangeNetwork",
    "ChangeOutput",
    "DSIFNConfig",
    "DSIFNOutput",
    "FCEFConfig",
    "FCSiamConc",
    "FCSiamConcConfig",
    "FCSiamDiff",
    "FCSiamDiffConfig",
    "ModelConfig",
    "Normalization",
    "VGG16Encoder",
    "WeightsRecord",
    "build_network",
    "model_config",
    "model_entry",
]
