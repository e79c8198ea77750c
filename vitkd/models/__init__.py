"""vitkd's models: the CIFAR zoo and small ViTs registered with timm, weight loading, teacher freezing.

Importing this package registers every model with timm (``timm.create_model('cifar_resnet8x4')``).
"""

from vitkd.models import (  # noqa: F401  (imported to register their models with timm)
    cifar_mobilenetv2,
    cifar_resnet,
    cifar_shufflenet,
    cifar_vgg,
    cifar_wrn,
    vit,
)
from vitkd.models.teacher import adapt_teacher, create_student, create_teacher, freeze
from vitkd.models.vit import VIT_EXPORT_ARCH
from vitkd.models.weights import CheckpointMismatchError, LoadReport, load_weights, read_state_dict

# timm names of the CIFAR zoo, in the order of the reference list of released checkpoints
CIFAR_MODELS: tuple[str, ...] = (
    "cifar_resnet8",
    "cifar_resnet14",
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet44",
    "cifar_resnet56",
    "cifar_resnet110",
    "cifar_resnet8x4",
    "cifar_resnet32x4",
    "cifar_resnet50",
    "cifar_resnet18",
    "cifar_wrn_16_1",
    "cifar_wrn_16_2",
    "cifar_wrn_40_1",
    "cifar_wrn_40_2",
    "cifar_vgg8",
    "cifar_vgg11",
    "cifar_vgg13",
    "cifar_vgg16",
    "cifar_vgg19",
    "cifar_mobilenetv2",
    "cifar_shufflev1",
    "cifar_shufflev2",
)
VIT_MODELS: tuple[str, ...] = tuple(VIT_EXPORT_ARCH)

__all__ = [
    "CIFAR_MODELS",
    "VIT_MODELS",
    "CheckpointMismatchError",
    "LoadReport",
    "adapt_teacher",
    "create_student",
    "create_teacher",
    "freeze",
    "load_weights",
    "read_state_dict",
]
