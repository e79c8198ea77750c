"""Packaging: `import vitkd` registers its models with timm in any import order; the wheel ships
py.typed, the licence and the `vitkd` console command, and its `vitkd.losses` needs neither timm nor
Accelerate."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = "m = timm.create_model('cifar_resnet8x4', num_classes=100); assert sum(p.numel() for p in m.parameters()) == 1233540"


@pytest.mark.parametrize("imports", ["import vitkd, timm", "import timm, vitkd", "import vitkd.losses, timm"])
def test_models_are_registered_in_any_import_order(imports):
    result = subprocess.run([sys.executable, "-c", f"{imports}; {CHECK}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_timm_alone_does_not_know_vitkd_models():
    code = "import timm; assert not timm.is_model('cifar_resnet8x4')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel` builds from a copy of the source (so no build/ or egg-info lands in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "vitkd", src / "vitkd", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (path,) = out.glob("vitkd-*.whl")
    return path


@pytest.mark.slow
def test_wheel_ships_py_typed_license_and_the_console_command(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "vitkd/py.typed" in names and "vitkd/commands/evaluate.py" in names
    assert any(n.endswith("LICENSE") and ".dist-info/" in n for n in names)
    assert "vitkd = vitkd.cli:main" in entry_points


@pytest.mark.slow
def test_installed_wheel_imports_losses_without_timm_and_runs_the_command(wheel, tmp_path):
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)]
    assert subprocess.run(install, capture_output=True, text=True, timeout=300).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import vitkd.losses, sys; assert vitkd.losses.__file__.startswith(sys.argv[1]); " \
           "assert 'timm' not in sys.modules and 'accelerate' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code, str(target)], env=env, capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    result = subprocess.run([str(target / "bin" / "vitkd"), "--help"], env=env, capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(name in result.stdout for name in ("distill", "evaluate", "make-table", "push-to-hub", "sweep"))
