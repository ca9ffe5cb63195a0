#!/usr/bin/env bash
# Run the tests against a sanitizer build of the extension.
#
#   scripts/sanitize.sh [pytest args]              ASan + UBSan build, the whole test suite
#   scripts/sanitize.sh --valgrind [pytest args]   a subset under valgrind memcheck
#
# Both builds are debug builds (CNNFAST_DEBUG=1: Cython bounds checks on, -O1 -g;
# CNNFAST_DEBUG=0 gives the sanitizers -O3 code, but an ASan build then takes ~10 min).
# Pytest arguments replace the default selection (e.g. tests/test_pool.py -k nan).
# The build happens in a throwaway copy of the source tree (the files git knows, or
# would add), so the tree itself and its in-place build are never touched. Any
# report fails the run: UBSan is built with -fno-sanitize-recover=all (and
# halt_on_error=1), ASan aborts on its first error, any memcheck error counts, and
# an exception a kernel could not raise (a bounds check in a nogil helper) fails
# its test. Leak checks are off: CPython keeps its own objects alive at exit.
#
# Environment: PYTHON (default python3; needs numpy, scipy, Cython, pytest,
# hypothesis, threadpoolctl, tqdm and scikit-learn -- the test extra), CC (default gcc),
# KEEP=1 keeps the copy.
set -euo pipefail

mode=asan
if [ "${1:-}" = "--valgrind" ]; then
    mode=valgrind
    shift
fi
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
# the interpreter itself, not a wrapper script (pyenv's shims are bash scripts)
python=$("$python" -c 'import sys; print(sys.executable)')
cc=${CC:-gcc}
work=$(mktemp -d "${TMPDIR:-/tmp}/cnnfast-sanitize.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "sanitize: keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi

# --- a copy of the sources: tracked and untracked-but-not-ignored files, no build outputs
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$root" && git ls-files -z --cached --others --exclude-standard) |
        while IFS= read -r -d '' f; do
            [ -f "$root/$f" ] && printf '%s\0' "$f"
        done | (cd "$root" && xargs -0 cp --parents -t "$work")
else  # an unpacked sdist
    (cd "$root" && tar --exclude=build --exclude='*.so' --exclude='cnnfast/_ext/*.c' \
        --exclude='*.egg-info' -cf - .) | tar -C "$work" -xf -
fi
cd "$work"

start=$SECONDS
if [ "$mode" = asan ]; then
    echo "sanitize: building with -fsanitize=address,undefined ($cc) in $work"
    # setup.py adds -fsanitize=address,undefined -fno-omit-frame-pointer; CFLAGS adds
    # what makes every UBSan finding fatal
    CC=$cc CNNFAST_SANITIZE=1 CNNFAST_DEBUG=${CNNFAST_DEBUG:-1} CFLAGS="-fno-sanitize-recover=all" \
        "$python" setup.py -q build_ext --inplace >build.log 2>&1 ||
        { cat build.log; exit 1; }
    asan=$("$cc" -print-file-name=libasan.so)
    [ -f "$asan" ] || { echo "sanitize: $cc has no libasan.so" >&2; exit 1; }
    echo "sanitize: built in $((SECONDS - start)) s; running the tests with $asan preloaded"
    # allocator_may_return_null: the tests ask for impossible arrays and expect a
    # MemoryError, which NumPy raises when malloc returns NULL
    # Reports go to files (pytest captures stderr, and an abort loses the capture):
    # any report fails the run, also one from a child process a test started.
    # libstdc++ preloaded too: ASan looks up the real __cxa_throw when it starts, and
    # a C++ exception thrown later by a library loaded after it (torch's ONNX exporter
    # in the ONNX tests, onnxruntime) otherwise aborts in its interceptor
    stdcxx=$("$cc" -print-file-name=libstdc++.so.6)
    export LD_PRELOAD="$asan${stdcxx:+:$stdcxx}"
    export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:log_path=$work/report:${ASAN_OPTIONS:-}
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$work/report:${UBSAN_OPTIONS:-}
    if [ "$#" -eq 0 ]; then
        set -- tests
    fi
    status=0
    "$python" -m pytest -q -p no:randomly -p no:cacheprovider \
        -W error::pytest.PytestUnraisableExceptionWarning "$@" || status=$?
    unset LD_PRELOAD
    if compgen -G "$work/report.*" >/dev/null; then
        cat "$work"/report.*
        echo "sanitize: sanitizer reports above" >&2
        exit 1
    fi
    [ "$status" -eq 0 ] || { echo "sanitize: tests failed (status $status)" >&2; exit "$status"; }
else
    command -v valgrind >/dev/null || { echo "sanitize: valgrind is not installed" >&2; exit 1; }
    echo "sanitize: building for valgrind in $work"
    CC=$cc CNNFAST_DEBUG=${CNNFAST_DEBUG:-1} "$python" setup.py -q build_ext --inplace \
        >build.log 2>&1 ||
        { cat build.log; exit 1; }
    echo "sanitize: built in $((SECONDS - start)) s; running the valgrind subset"
    if [ "$#" -eq 0 ]; then
        # Every conv algorithm (1-D/2-D/3-D, float64) and pooling family forward and
        # backward against the reference, NaN/inf/-inf/ties, out-of-range indices
        # (the kernels' range check), misaligned inputs: ~600 tests, a few minutes.
        k="not torch and not finite_differences and not thread and ("
        k+="(test_conv and float64 and (match_reference or same_padding_entirely))"
        k+=" or (test_pool and not layouts and (matches_reference or nan or ties"
        k+=" or infinity or padding_only or overlapping))"
        k+=" or (test_edge_cases and (negative_infinity or beat"
        k+=" or (forward_propagates and float64)))"
        k+=" or (test_validation and functional and indices)"
        k+=" or (layouts and misaligned and float64))"
        set -- tests/test_conv.py tests/test_pool.py tests/test_edge_cases.py \
            tests/test_validation.py tests/test_pool_layouts.py tests/test_conv_layouts.py -k "$k"
    fi
    # PYTHONMALLOC=malloc: every allocation goes through malloc, which memcheck tracks
    status=0
    PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=99 --leak-check=no \
        --track-origins=no --suppressions="$root/scripts/valgrind-python.supp" \
        --log-file="$work/valgrind.%p.log" \
        "$python" -m pytest -q -p no:randomly -p no:cacheprovider \
        -W error::pytest.PytestUnraisableExceptionWarning "$@" || status=$?
    if ! compgen -G "$work/valgrind.*.log" >/dev/null; then
        echo "sanitize: valgrind wrote no log" >&2
        exit 1
    fi
    if grep -q "ERROR SUMMARY: [1-9]" "$work"/valgrind.*.log; then
        cat "$work"/valgrind.*.log
        echo "sanitize: valgrind reported errors (above)" >&2
        exit 1
    fi
    grep -h "ERROR SUMMARY" "$work"/valgrind.*.log
    [ "$status" -eq 0 ] || { echo "sanitize: tests failed (status $status)" >&2; exit "$status"; }
fi
echo "sanitize: $mode run clean in $((SECONDS - start)) s"
