"""Build script for graphgrad's optional compiled parts (everything else is in pyproject.toml).

``pip install .`` (or ``-e .``) compiles two Cython modules:

- ``graphgrad._scalar_core``: the C twin of the pure-Python scalar units (``_scalar_py.py``);
- ``graphgrad._kernels``: fused loops (SGD/Adam updates, ReLU's VJP, softmax cross-entropy)
  whose NumPy twins live in ``_fused.py``.

Both are optional: without Cython (a build without isolation) or without a C compiler the
install still succeeds and graphgrad runs its pure-Python/NumPy code
(``graphgrad.scalar.COMPILED`` and ``graphgrad._fused.COMPILED`` are then ``False``).
Setting ``GRAPHGRAD_PURE_PYTHON=1`` at run time selects that code even when both are built.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

# (module, source, optimisation level). -ffp-contract=off: no fused multiply-adds, so the
# compiled floats match the pure-Python/NumPy twins bit for bit (GCC and Clang may fuse
# ``a + b * c`` on targets with FMA, e.g. aarch64).
MODULES = [
    ("graphgrad._scalar_core", "src/graphgrad/_scalar_core.pyx", "-O2"),
    ("graphgrad._kernels", "src/graphgrad/_kernels.pyx", "-O3"),
]


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
    for name, source, opt in present:
        flags = [] if os.name == "nt" else [opt, "-ffp-contract=off", "-fno-math-errno"]
        exts.append(Extension(name, [source], extra_compile_args=flags))
    built = cythonize(exts, language_level=3, quiet=True)
    for e in built:  # set here: cythonize makes new Extension objects, without it
        e.optional = True  # a failed compile warns and installs the pure-Python package
    return built


setup(ext_modules=extensions())
