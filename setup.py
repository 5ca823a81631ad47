"""Build script for graphgrad's optional compiled parts (everything else is in pyproject.toml).

``pip install .`` (or ``-e .``) compiles two Cython modules:

- ``graphgrad._scalar_core``: the C twin of the pure-Python scalar units (``_scalar_py.py``);
- ``graphgrad._kernels``: fused loops (SGD/Adam updates, ReLU and its VJP, softmax
  cross-entropy, bias sums) whose NumPy twins live in ``_fused.py``, multi-threaded with OpenMP
  where the compiler supports ``-fopenmp`` (and single-threaded, otherwise the same, where not).

Both are optional: without Cython (a build without isolation) or without a C compiler the
install still succeeds and graphgrad runs its pure-Python/NumPy code
(``graphgrad.scalar.COMPILED`` and ``graphgrad._fused.COMPILED`` are then ``False``).
Setting ``GRAPHGRAD_PURE_PYTHON=1`` at run time selects that code even when both are built.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup

# (module, source, optimisation level, OpenMP wanted). -ffp-contract=off: no fused
# multiply-adds, so the compiled floats match the pure-Python/NumPy twins bit for bit (GCC
# and Clang may fuse ``a + b * c`` on targets with FMA, e.g. aarch64).
MODULES = [
    ("graphgrad._scalar_core", "src/graphgrad/_scalar_core.pyx", "-O2", False),
    ("graphgrad._kernels", "src/graphgrad/_kernels.pyx", "-O3", True),
]


def openmp_flags() -> list[str]:
    """``["-fopenmp"]`` if the C compiler builds and links an OpenMP program with it, else
    ``[]`` (e.g. Apple's clang without libomp): the kernels are then built single-threaded.
    ``GRAPHGRAD_NO_OPENMP=1`` skips OpenMP."""
    if os.name == "nt" or os.environ.get("GRAPHGRAD_NO_OPENMP"):
        return []
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if not cc or shutil.which(cc[0]) is None:
        return []
    src = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.c")
        with open(path, "w") as f:
            f.write(src)
        cmd = [*cc, "-fopenmp", path, "-o", os.path.join(d, "t")]
        try:
            ok = subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
    if not ok:
        print(
            "graphgrad: the C compiler has no OpenMP; the kernels run on one thread",
            file=sys.stderr,
        )
    return ["-fopenmp"] if ok else []


def extensions() -> list[Extension]:
    present = [m for m in MODULES if os.path.exists(m[1])]
    if not present:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("graphgrad: Cython is not installed; the compiled parts are not built")
        return []
    exts = []
    omp = openmp_flags() if any(m[3] for m in present) else []
    for name, source, opt, wants_omp in present:
        flags = [] if os.name == "nt" else [opt, "-ffp-contract=off", "-fno-math-errno"]
        extra = omp if wants_omp else []
        exts.append(
            Extension(name, [source], extra_compile_args=flags + extra, extra_link_args=extra)
        )
    built = cythonize(exts, language_level=3, quiet=True)
    for e in built:  # set here: cythonize makes new Extension objects, without it
        e.optional = True  # a failed compile warns and installs the pure-Python package
    return built


setup(ext_modules=extensions())
