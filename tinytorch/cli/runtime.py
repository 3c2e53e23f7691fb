"""Process-wide settings the command makes for speed, which importing tinytorch never makes.

**BLAS threads.** NumPy's OpenBLAS starts one thread per core. For the small matrices of the
command line's models the threads cost more than they give, and on a busy machine a stalled
thread stalls every product: on the shared 2-core development machines one thread trains the
CNN and the GPT several times faster than two (see the README). ``OPENBLAS_NUM_THREADS=1``
does this, but only when set before NumPy is imported, and the ``tinytorch`` command imports
NumPy before it runs a line of its own. So the command sets the limit at run time, through
the library's own API. :func:`limit_blas_threads` uses threadpoolctl when it is installed
(``pip install 'tinytorch[threads]'``; it knows every BLAS: OpenBLAS, MKL, BLIS), and
otherwise calls OpenBLAS's ``openblas_set_num_threads`` itself, under any of the names builds
give it (NumPy 2's wheels bundle "scipy-openblas", whose function is
``scipy_openblas_set_num_threads64_``).

**Freed memory.** A training step allocates megabytes of activations and frees them at its
end. By default glibc's malloc gives large freed blocks back to the operating system, so the
next step faults every page in again: a GPT step then spends a fifth of its time in the kernel
(1.7 million page faults in 300 steps). :func:`keep_freed_memory` asks malloc to keep freed
memory for reuse (``mallopt``, as the environment variables ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` would): the process keeps its peak memory until it ends.
"""

import ctypes
import glob
import os
import sys

# Variables that fix BLAS threads when set before NumPy starts; set, they win over the default.
ENVIRONMENT = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Variables that tune glibc's malloc; when one is set, the user's choice stands.
MALLOC_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3           # mallopt's parameters (malloc.h)
# Names of OpenBLAS's thread functions: plain, 64-bit-integer builds, NumPy's scipy-openblas.
_SUFFIXES = ("", "64_", "_64")
_PREFIXES = ("openblas", "scipy_openblas")


def environment_threads():
    """The variable of :data:`ENVIRONMENT` set in the environment (``"NAME=value"``), or None."""
    for name in ENVIRONMENT:
        if os.environ.get(name, "").strip():
            return f"{name}={os.environ[name].strip()}"
    return None


def limit_blas_threads(threads):
    """Let the BLAS libraries loaded in this process use at most ``threads`` threads.

    Returns how: ``"threadpoolctl"``, ``"openblas"`` (its API through ctypes), or None when no
    library could be reached (a BLAS other than OpenBLAS without threadpoolctl: then only the
    environment variables work, set before Python starts).
    """
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        pass
    else:
        if any(info.get("user_api") == "blas" for info in threadpool_info()):
            threadpool_limits(limits=threads, user_api="blas")
            return "threadpoolctl"
    return "openblas" if _set_openblas_threads(threads) else None


def blas_threads():
    """The thread counts of the OpenBLAS libraries loaded in this process (a list, in the
    order found; empty when none is reachable through ctypes)."""
    counts = []
    for library in _openblas_libraries():
        get = _function(library, "get_num_threads")
        if get is not None:
            counts.append(int(get()))
    return counts


def _set_openblas_threads(threads):
    done = False
    for library in _openblas_libraries():
        set_threads = _function(library, "set_num_threads")
        if set_threads is not None:
            set_threads(ctypes.c_int(threads))
            done = True
    return done


def _function(library, name):
    for prefix in _PREFIXES:
        for suffix in _SUFFIXES:
            function = getattr(library, f"{prefix}_{name}{suffix}", None)
            if function is not None:
                return function
    return None


def _openblas_libraries():
    """The OpenBLAS shared libraries already loaded in this process, as ctypes handles."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:             # Linux: every mapped file
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                if "openblas" in os.path.basename(path).lower() and path not in paths:
                    paths.append(path)
    except OSError:                                       # elsewhere: NumPy's bundled copies
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            root = os.path.dirname(os.path.dirname(numpy.__file__))
            for folder in ("numpy.libs", os.path.join("numpy", ".dylibs")):
                paths += glob.glob(os.path.join(root, folder, "*openblas*"))
    libraries = []
    for path in paths:
        try:    # RTLD_NOLOAD: only a library already loaded (never load a second copy)
            libraries.append(ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0)
                                         | ctypes.RTLD_GLOBAL))
        except OSError:
            continue
    return libraries


def keep_freed_memory(mmap_threshold=256 * 2**20, trim_threshold=2**30):
    """Ask glibc's malloc to serve blocks below ``mmap_threshold`` bytes from its heap and to
    keep up to ``trim_threshold`` bytes of freed memory instead of returning it to the
    operating system. True when done; False elsewhere than glibc, or when one of
    :data:`MALLOC_ENVIRONMENT` is set (the user's choice stands)."""
    if any(os.environ.get(name) for name in MALLOC_ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):                     # not glibc (musl, macOS, Windows)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and mallopt(_M_TRIM_THRESHOLD, trim_threshold))
