#!/usr/bin/env bash
# Build MinkowskiEngine 0.5.4 once, cache the wheel, install it into a Python environment.
#
#   bash semkit/ssl/install_minkowski.sh [PYTHON]        (default PYTHON: .venv/bin/python)
#
# Idempotent: exits at once when MinkowskiEngine already imports; installs the cached wheel in seconds when
# one exists for this Python, torch version and CPU/CUDA variant; otherwise builds it (about 6 minutes on
# two CPU cores) and caches it under $SEMKIT_WHEEL_CACHE (default ~/.cache/semkit/wheels).
#
# Recipe (facts established for MinkowskiEngine 0.5.4 with torch 2.x on Python 3.11):
#   * system: libopenblas-dev (installed with apt-get when missing and we are root or have sudo);
#   * build tools: setuptools<70 (newer ones break its numpy.distutils-based setup.py), wheel (old setuptools
#     has no bdist_wheel without it; fresh venvs do not ship it) and ninja, put on
#     PYTHONPATH/PATH from a private folder so the environment's own setuptools is left alone;
#   * `python setup.py bdist_wheel --cpu_only --blas=openblas` without build isolation (it compiles against
#     the environment's torch and numpy); on a machine with a CUDA GPU and nvcc, without --cpu_only;
#   * at import, Python >= 3.10 needs collections.Sequence & co. aliased to collections.abc
#     (semkit.ssl.sparse.import_minkowski does that).
# Environment: SEMKIT_WHEEL_CACHE, MAX_JOBS (parallel compile jobs, default: number of cores),
#              SEMKIT_MINKOWSKI_CUDA=0/1 (force the variant).
set -euo pipefail

PY="${1:-${PYTHON:-.venv/bin/python}}"
# Absolute path without resolving symlinks (a venv's python is a symlink; resolving it would leave the venv).
if [[ "$PY" == */* ]]; then PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"; else PY="$(command -v "$PY")"; fi
VERSION=0.5.4
CACHE="${SEMKIT_WHEEL_CACHE:-$HOME/.cache/semkit/wheels}"
IMPORT_CHECK='import collections, collections.abc
for n in ("Sequence", "Iterable", "Mapping", "MutableMapping", "Callable", "Iterator", "Hashable", "Set"):
    hasattr(collections, n) or setattr(collections, n, getattr(collections.abc, n))
import MinkowskiEngine as ME
print(ME.__version__)'

log() { echo "[install-minkowski] $*" >&2; }

if ! "$PY" -c "import torch" 2>/dev/null; then
    log "error: $PY cannot import torch; create the environment first (make env)"
    exit 1
fi
if ver=$("$PY" -c "$IMPORT_CHECK" 2>/dev/null); then
    log "MinkowskiEngine $ver already importable with $PY; nothing to do"
    exit 0
fi

# ---- variant: CUDA only when torch sees a GPU and nvcc exists (or forced)
if [[ -n "${SEMKIT_MINKOWSKI_CUDA:-}" ]]; then
    CUDA="$SEMKIT_MINKOWSKI_CUDA"
elif "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
        && command -v nvcc >/dev/null 2>&1; then
    CUDA=1
else
    CUDA=0
fi
TAG=$("$PY" -c "import sys, torch; print(f'cp{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.split(\"+\")[0]}')")
if [[ "$CUDA" == 1 ]]; then
    TAG="$TAG-cu$("$PY" -c 'import torch; print(torch.version.cuda)')"
else
    TAG="$TAG-cpu"
fi
WHEEL_DIR="$CACHE/minkowskiengine-$VERSION-$TAG"

install_cached() {
    local wheel
    wheel=$(ls "$WHEEL_DIR"/MinkowskiEngine-"$VERSION"-*.whl 2>/dev/null | head -n 1 || true)
    [[ -n "$wheel" ]] || return 1
    log "installing cached wheel $wheel"
    "$PY" -m pip install --quiet --no-deps --force-reinstall "$wheel"
    ver=$("$PY" -c "$IMPORT_CHECK")
    log "MinkowskiEngine $ver installed ($TAG)"
}

if install_cached; then
    exit 0
fi

# ---- build
start=$(date +%s)
log "no cached wheel for $TAG; building MinkowskiEngine $VERSION from source (several minutes)"

has_openblas() {
    if command -v dpkg-query >/dev/null 2>&1; then
        dpkg-query -W -f='${Status}' libopenblas-dev 2>/dev/null | grep -q "install ok installed"
    else
        ls /usr/include/*/cblas.h /usr/include/cblas.h /usr/include/openblas/cblas.h >/dev/null 2>&1
    fi
}
if ! has_openblas; then
    if [[ $(id -u) == 0 ]]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO="none"; fi
    if [[ "$SUDO" == none ]] || ! command -v apt-get >/dev/null; then
        log "error: OpenBLAS development files are missing; install libopenblas-dev (Debian/Ubuntu) or openblas-devel"
        exit 1
    fi
    log "installing libopenblas-dev"
    $SUDO apt-get install -y -qq libopenblas-dev >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq libopenblas-dev >/dev/null; }
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/semkit-minkowski.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# wheel: setuptools < 70.1 has no bdist_wheel of its own, and a fresh venv no longer ships the wheel package
"$PY" -m pip install --quiet --no-warn-conflicts --target "$WORK/tools" "setuptools<70" "wheel<0.44" ninja
export PYTHONPATH="$WORK/tools${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$WORK/tools/bin:$PATH"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
# The sdist's metadata step imports torch and numpy.distutils, hence no build isolation and the old setuptools.
"$PY" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    -d "$WORK/sdist" "MinkowskiEngine==$VERSION"
tar -xzf "$WORK"/sdist/MinkowskiEngine-"$VERSION".tar.gz -C "$WORK"
cd "$WORK/MinkowskiEngine-$VERSION"
FLAGS=(--blas=openblas)
[[ "$CUDA" == 1 ]] || FLAGS+=(--cpu_only)
log "python setup.py bdist_wheel ${FLAGS[*]} (MAX_JOBS=$MAX_JOBS)"
"$PY" setup.py bdist_wheel "${FLAGS[@]}" > "$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log" >&2
    log "error: build failed (full log above, last 40 lines)"
    exit 1
}
mkdir -p "$WHEEL_DIR"
cp dist/MinkowskiEngine-"$VERSION"-*.whl "$WHEEL_DIR"/
cd - >/dev/null
install_cached
log "built and cached in $(( $(date +%s) - start )) s: $WHEEL_DIR"
