"""The optional C accelerator; everything else about the build is in pyproject.toml.

``optional=True``: where the extension does not compile (no compiler, no Python headers), the
build goes on without it and the package runs on its pure-Python code (docs/performance.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cleanup_middleware._speedups",
            ["cleanup_middleware/_speedups.c"],
            optional=True,
        )
    ]
)
