"""The package imports in any order: no module works only because another was imported first.

For every module of ``tinytorch.core``, a copy of the package whose ``__init__.py`` imports that
module first (as an import sorter might arrange it) must import and compute a gradient.
"""

import pathlib
import shutil
import subprocess
import sys

import pytest

import tinytorch

PACKAGE = pathlib.Path(tinytorch.__file__).parent
CORE_MODULES = sorted(p.stem for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__")

SMOKE = """
import numpy as np
import tinytorch as tt
x = tt.Tensor([1.0, 2.0], requires_grad=True)
loss = tt.functional.cross_entropy((x * x).reshape(1, 2), [1]) + tt.Linear(2, 1)(x).sum()
loss.backward()
assert x.grad.shape == (2,) and np.isfinite(x.grad.data).all()
from tinytorch.core.autograd import MulBackward, CrossEntropyBackward, gradcheck, no_grad
import tinytorch.core.autograd as autograd
# Once loaded, the curriculum's names are plain attributes and the module's __getattr__ is gone,
# so CPython specialises ``autograd.run_op`` and ``autograd.MulBackward`` in tensor.py.
assert "__getattr__" not in vars(autograd) and "CrossEntropyBackward" in vars(autograd)
assert "MulBackward" in autograd.__all__ and "gradcheck" in dir(autograd)
"""


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("reordered")
    shutil.copytree(PACKAGE, root / "tinytorch",
                    ignore=shutil.ignore_patterns("__pycache__", "*.npz", "*.gz"))
    return root


@pytest.mark.parametrize("module", CORE_MODULES)
def test_the_package_imports_with_any_core_module_first(module, package_copy):
    init = package_copy / "tinytorch" / "__init__.py"
    original = (PACKAGE / "__init__.py").read_text()
    init.write_text(f"import tinytorch.core.{module}  # first, whatever the order\n" + original)
    result = subprocess.run([sys.executable, "-c", SMOKE], cwd=package_copy,
                            capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(package_copy), "PATH": ""})
    assert result.returncode == 0, f"importing tinytorch.core.{module} first:\n{result.stderr}"


def test_the_engine_does_not_import_the_nn_library():
    """core.autograd reaches functional.py's names lazily: importing the engine alone (without
    the package's own imports) loads neither functional.py nor ops.py."""
    code = ("import sys, types, importlib\n"
            f"pkg = types.ModuleType('tinytorch'); pkg.__path__ = [{str(PACKAGE)!r}]\n"
            "sys.modules['tinytorch'] = pkg\n"
            "importlib.import_module('tinytorch.core.autograd')\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('tinytorch.core.'))\n"
            "assert 'tinytorch.core.functional' not in loaded, loaded\n"
            "assert 'tinytorch.core.ops' not in loaded, loaded\n"
            "print(loaded)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
