"""Build script: Cython extensions with an OpenMP probe.

Environment switches:
  CNNFAST_OPENMP=auto|0|1  auto (default): use OpenMP if the compiler can build,
                           link and run a test program with it, else build serial
                           with a warning; 1: fail without it; 0: never.
  CNNFAST_NATIVE=1         compile for this CPU only (-march=native, one kernel
                           variant, no runtime dispatch); not portable.
  CNNFAST_DISPATCH=0       one baseline kernel variant, no x86 runtime dispatch:
                           the code path every non-x86 machine compiles.
  CNNFAST_DEBUG=1          Cython bounds/wraparound checks on, -O1 -g.
  CNNFAST_SANITIZE=1       -fsanitize=address,undefined (run with libasan preloaded).
  CNNFAST_BUILD_JOBS=n     extensions compiled at once (default: one per core;
                           `build_ext -j n` says the same).
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy  # build requirement: its C API's headers (_pool)
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_TEST = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n > 0 && omp_get_max_threads() > 0);
    return 0;
}
"""


def _flag(name, default="0"):
    return os.environ.get(name, default).strip().lower()


def _openmp_flags(compiler_type):
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        # pip builds without -j, and each extension compiles its kernels once per
        # ISA level and dtype (the whole build took 7.8 min on one of two cores):
        # the extensions compile side by side unless told otherwise
        if not self.parallel:
            jobs = os.environ.get("CNNFAST_BUILD_JOBS", "").strip()
            self.parallel = int(jobs) if jobs.isdigit() else (os.cpu_count() or 1)
            if self.parallel <= 1:
                self.parallel = None

    def _probe_openmp(self, cflags, ldflags):
        """Compile, link and run a tiny OpenMP program with the real compiler."""
        tmp = tempfile.mkdtemp(prefix="cnnfast-omp-")
        try:
            src = os.path.join(tmp, "omp_test.c")
            with open(src, "w") as f:
                f.write(OPENMP_TEST)
            objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
            exe = os.path.join(tmp, "omp_test")
            self.compiler.link_executable(objs, exe, extra_postargs=ldflags)
            out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
            return out.returncode == 0 and out.stdout.strip() == "1"
        except Exception:  # any compile/link/run failure means "no OpenMP"
            return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def build_extensions(self):
        mode = _flag("CNNFAST_OPENMP", "auto")
        cflags, ldflags = [], []
        if mode not in ("0", "off", "false"):
            omp_c, omp_l = _openmp_flags(self.compiler.compiler_type)
            if self._probe_openmp(omp_c, omp_l):
                cflags += omp_c
                ldflags += omp_l
                print("cnnfast: building with OpenMP")
            elif mode in ("1", "on", "true"):
                raise RuntimeError("cnnfast: CNNFAST_OPENMP=1 but the compiler cannot build "
                                   "an OpenMP program (install libgomp/libomp)")
            else:
                print("cnnfast: WARNING: the compiler cannot build OpenMP programs; "
                      "building serial kernels (set CNNFAST_OPENMP=1 to make this an error)")
        if self.compiler.compiler_type != "msvc":
            debug = _flag("CNNFAST_DEBUG") == "1"
            cflags += ["-O1", "-g"] if debug else ["-O3"]
            cflags += ["-fno-strict-aliasing", "-Wno-unused-function", "-Wno-psabi"]
            if _flag("CNNFAST_NATIVE") == "1":
                cflags += ["-march=native", "-DCNNFAST_NO_DISPATCH"]
            elif _flag("CNNFAST_DISPATCH", "1") in ("0", "off", "false"):
                cflags += ["-DCNNFAST_NO_DISPATCH"]
            if _flag("CNNFAST_SANITIZE") == "1":
                san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
                cflags += san
                ldflags += san
        # recorded for show_config() and the benchmark's environment
        recorded = '"' + " ".join(cflags).replace('"', "'") + '"'
        for ext in self.extensions:
            ext.define_macros = list(ext.define_macros or []) + [("CNNFAST_BUILD_FLAGS", recorded)]
            ext.extra_compile_args = list(ext.extra_compile_args or []) + cflags
            ext.extra_link_args = list(ext.extra_link_args or []) + ldflags
        super().build_extensions()


def _extensions():
    debug = _flag("CNNFAST_DEBUG") == "1"
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
    }
    # The C kernels live in csrc/, one folder per kernel family; every
    # extension sees csrc/common (ISA dispatch, vectors, geometry) and the
    # folders of the families it drives, and rebuilds when one of their
    # headers changes.
    def family(*names):
        dirs = [os.path.join("csrc", name) for name in ("common",) + names]
        headers = sorted(os.path.join(d, h) for d in dirs for h in os.listdir(d)
                         if h.endswith(".h"))
        return {"include_dirs": dirs, "depends": headers}

    def ext(name, *families, pxd=(), numpy_api=False):
        kw = family(*families)
        kw["depends"] += ["cnnfast/_ext/" + p for p in pxd]
        if numpy_api:   # cimport numpy: its C API (arrays checked and made without Python calls)
            kw["include_dirs"] = kw["include_dirs"] + [numpy.get_include()]
            kw["define_macros"] = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        return Extension("cnnfast._ext." + name, ["cnnfast/_ext/%s.pyx" % name], **kw)

    exts = [
        ext("_conv", "conv", pxd=["conv_kernels.pxd", "conv_geom.pxd", "_blas.pxd"]
            + sorted("conv/" + f for f in os.listdir("cnnfast/_ext/conv") if f.endswith(".pxi"))),
        ext("_depthwise", "depthwise", pxd=["depthwise_kernels.pxd", "conv_geom.pxd"]),
        ext("_conv_nhwc", "nhwc", pxd=["conv_geom.pxd", "_blas.pxd"]),
        ext("_block", "nhwc", "depthwise", pxd=["conv_geom.pxd"]),
        ext("_pool", "pool", pxd=["pool_kernels.pxd"], numpy_api=True),
        ext("_elementwise", "elementwise", pxd=["elementwise_kernels.pxd"]),
        ext("_layout", "layout"),
        ext("_dense", pxd=["_blas.pxd"]),
        ext("_runtime"),
    ]
    return cythonize(exts, compiler_directives=directives, build_dir="build/cython")


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
