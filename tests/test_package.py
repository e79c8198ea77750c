"""`import vitkd` registers its models with timm whichever of the two is imported first."""

import subprocess
import sys

import pytest

CHECK = "m = timm.create_model('cifar_resnet8x4', num_classes=100); assert sum(p.numel() for p in m.parameters()) == 1233540"


@pytest.mark.parametrize("imports", ["import vitkd, timm", "import timm, vitkd", "import vitkd.losses, timm"])
def test_models_are_registered_in_any_import_order(imports):
    result = subprocess.run([sys.executable, "-c", f"{imports}; {CHECK}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_timm_alone_does_not_know_vitkd_models():
    code = "import timm; assert not timm.is_model('cifar_resnet8x4')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
