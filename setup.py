"""The one native module: collector/fastbuild.c, the collector's hot path.

Everything else is in pyproject.toml. The extension is optional: on a host
without a C compiler the install still succeeds without it, and the collector
runs its Python path (collector/native.py says so in its log and doctor line).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "snoopbus.collector._fastbuild",
            ["collector/fastbuild.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
            optional=True,
        )
    ]
)
