"""The test environment itself: torchvision's model zoo imports beside the CPU build of torch."""

import subprocess
import sys

import pytest


def test_torchvision_models_import_and_run():
    import torch
    import torchvision

    model = torchvision.models.resnet18(num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.slow
def test_lightning_imports_beside_torchvision_in_a_subprocess():
    # Lightning imports torchvision when it is installed; DDP workers are fresh interpreters.
    code = "import lightning.pytorch, torchvision, sys; sys.exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_runtime_package_does_not_import_torchvision():
    code = "import sys, nsp; sys.exit(1 if 'torchvision' in sys.modules else 0)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
