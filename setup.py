"""The native modules: the hot paths of the collector and of the archive.

Everything else is in pyproject.toml. The extensions are optional: on a host
without a C compiler the install still succeeds without them, and each runs
its Python path (collector/native.py and consumers/archive/native.py say so
in their logs).
"""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-std=gnu11", "-Wall"]
# proto/native_buf.h: the byte buffer both modules write into.
_INCLUDE = ["proto"]
_DEPENDS = ["proto/native_buf.h"]

setup(
    ext_modules=[
        # collector/fastbuild.c: kernel records -> msgpack events.
        Extension("snoopbus.collector._fastbuild", ["collector/fastbuild.c"],
                  extra_compile_args=_FLAGS, optional=True,
                  include_dirs=_INCLUDE, depends=_DEPENDS),
        # consumers/archive/fastcols.c: msgpack events -> Arrow column buffers.
        Extension("snoopbus.consumers.archive._fastcols", ["consumers/archive/fastcols.c"],
                  extra_compile_args=_FLAGS, optional=True,
                  include_dirs=_INCLUDE, depends=_DEPENDS),
        # consumers/fastpair.c: the rename pairer's loop over a message's halves.
        Extension("snoopbus.consumers._fastpair", ["consumers/fastpair.c"],
                  extra_compile_args=_FLAGS, optional=True),
    ]
)
