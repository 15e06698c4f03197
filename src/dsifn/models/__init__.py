"""Networks: DSIFN and its VGG16 encoder."""

from dsifn.models.dsifn import DSIFN, DSIFNConfig, DSIFNOutput
from dsifn.models.vgg import VGG16_IMAGENET1K_V1, VGG16Encoder, WeightsRecord
from dsifn.normalization import CAFFE_BGR, IMAGENET_RGB, Normalization

__all__ = [
    "CAFFE_BGR",
    "DSIFN",
    "IMAGENET_RGB",
    "VGG16_IMAGENET1K_V1",
    "DSIFNConfig",
    "DSIFNOutput",
    "Normalization",
    "VGG16Encoder",
    "WeightsRecord",
]
