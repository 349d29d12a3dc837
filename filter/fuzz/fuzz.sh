#!/usr/bin/env bash
# citygate fuzzing (cargo fuzz, nightly). See SECURITY.md "Fuzzing".
#
#   fuzz.sh build [TARGET…]            build the targets (once per change)
#   fuzz.sh run TARGET [LIBFUZZER ARG…] fuzz from seeds/ + corpus/ into a
#                                      scratch corpus (corpus-work/, ignored),
#                                      e.g. `fuzz.sh run jwt -runs=10000000`
#                                      or `-max_total_time=3600`
#   fuzz.sh keep TARGET                merge what the scratch corpus adds over
#                                      seeds/ into corpus/ (minimized: only
#                                      inputs with new coverage), to commit
#   fuzz.sh smoke [TARGET…]            each target SMOKE_SECONDS (20) from the
#                                      committed inputs; a crash fails
#   fuzz.sh coverage TARGET [DIR…]     lines and regions of citygate's own code
#                                      (filter/core/src) that the inputs reach
#                                      (default: seeds/, corpus/, corpus-work/);
#                                      compare two snapshots to judge a plateau
#
# Targets: config jwt request redact (native core, filter/fuzz) and
# wasm_gateway (the release .wasm in wasmtime, host-tests/fuzz). Crashes are
# written to <crate>/fuzz/artifacts/TARGET/; a fixed one is kept as a
# reproducer in <crate>/fuzz/regressions/TARGET/, replayed by
# host-tests/tests/suite/fuzz_regressions.rs on stable.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ALL_TARGETS=(config jwt request redact wasm_gateway)
# Release with debug assertions and overflow checks; the same flags every
# time so `run` and `smoke` reuse one build.
# Every cargo fuzz call runs inside the target's fuzz crate, and names it
# with --fuzz-dir: filter/fuzz sits in a folder with no Cargo.toml of its
# own, so cargo fuzz's default (the nearest package's fuzz/) would look for
# a fuzz/ at the workspace root.
FUZZ_FLAGS=(-O -a --fuzz-dir .)
# No backtrace captured for errors: regorus' parser builds an anyhow error
# for every alternative it abandons, and with RUST_BACKTRACE set each one
# walks the stack (seconds per input; Envoy's Wasm never captures them).
# A panic still prints its backtrace.
export RUST_LIB_BACKTRACE=0

crate_dir() {
    case "$1" in
        wasm_gateway) echo "$root/host-tests/fuzz" ;;
        config | jwt | request | redact) echo "$root/filter/fuzz" ;;
        *) echo "unknown target: $1 (one of ${ALL_TARGETS[*]})" >&2; exit 2 ;;
    esac
}

ensure_tools() {
    if ! rustup toolchain list | grep -q '^nightly'; then
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked
    fi
}

# The whole-.wasm target loads the release filter; build it with the
# workspace's pinned toolchain, as the tests do.
ensure_wasm() {
    if [ -z "${CITYGATE_WASM:-}" ]; then
        (cd "$root" && cargo build --quiet --release --target wasm32-wasip1 \
            -p citygate-filter --target-dir target/wasm)
        export CITYGATE_WASM="$root/target/wasm/wasm32-wasip1/release/citygate_filter.wasm"
    fi
}

build() {
    local t
    for t in "$@"; do
        (cd "$(crate_dir "$t")" && cargo +nightly fuzz build "${FUZZ_FLAGS[@]}" "$t")
    done
}

binary() {
    echo "$(crate_dir "$1")/target/x86_64-unknown-linux-gnu/release/$1"
}

# fuzz TARGET OUTPUT_DIR LIBFUZZER_ARGS…: seeds and the committed corpus
# are read, new inputs go to OUTPUT_DIR only.
fuzz() {
    local t="$1" out="$2"
    shift 2
    local dir
    dir="$(crate_dir "$t")"
    mkdir -p "$out" "$dir/seeds/$t" "$dir/corpus/$t" "$dir/artifacts/$t"
    [ "$t" = wasm_gateway ] && ensure_wasm
    (cd "$dir" && cargo +nightly fuzz run "${FUZZ_FLAGS[@]}" "$t" \
        "$out" "$dir/seeds/$t" "$dir/corpus/$t" -- \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@")
}

keep() {
    local t="$1" dir work merged name
    dir="$(crate_dir "$t")"
    work="$dir/corpus-work/$t"
    merged="$(mktemp -d)"
    cp "$dir/seeds/$t"/* "$merged"/
    [ "$t" = wasm_gateway ] && ensure_wasm
    # Committed corpora stay small: edges only (no hit counts), and no input
    # over KEEP_MAX_BYTES (the seeds already hold the large documents).
    candidates="$(mktemp -d)"
    find "$dir/corpus/$t" "$work" -type f -size -"${KEEP_MAX_BYTES:-8192}"c \
        -exec cp {} "$candidates"/ \;
    "$(binary "$t")" -merge=1 -use_counters=0 -timeout=10 -rss_limit_mb=2048 "$merged" "$candidates"
    rm -rf "$candidates"
    for name in "$dir/seeds/$t"/*; do rm -f "$merged/$(basename "$name")"; done
    rm -rf "$dir/corpus/$t"
    mkdir -p "$dir/corpus/$t"
    cp "$merged"/* "$dir/corpus/$t"/ 2>/dev/null || true
    rm -rf "$merged"
    echo "corpus/$t: $(ls "$dir/corpus/$t" | wc -l) files, $(du -sh "$dir/corpus/$t" | cut -f1)"
}

# coverage TARGET DIR…: one process, built with coverage instrumentation and
# without a sanitizer, runs every input; the report is restricted to filter/core/src, because
# libFuzzer's `cov` counts regorus, serde and wasmtime edges as well, and a
# plateau of citygate's own code is what tells whether its paths are reached.
coverage() {
    local t="$1" dir sysroot llvm_bin binary raw profile
    shift
    if [ "$t" = wasm_gateway ]; then
        echo "coverage: wasm_gateway runs the guest as compiled Wasm, invisible to" \
            "coverage instrumentation; measure the native targets" >&2
        exit 2
    fi
    dir="$(crate_dir "$t")"
    local dirs=("$@")
    if [ "${#dirs[@]}" -eq 0 ]; then
        dirs=("$dir/seeds/$t" "$dir/corpus/$t")
        [ -d "$dir/corpus-work/$t" ] && dirs+=("$dir/corpus-work/$t")
    fi
    local d
    for d in "${dirs[@]}"; do
        [ -d "$d" ] || { echo "coverage: $d is not a directory of inputs" >&2; exit 2; }
    done
    sysroot="$(rustc +nightly --print sysroot)"
    llvm_bin="$(echo "$sysroot"/lib/rustlib/*/bin)"
    if [ ! -x "$llvm_bin/llvm-cov" ]; then
        rustup +nightly component add llvm-tools-preview
        llvm_bin="$(echo "$sysroot"/lib/rustlib/*/bin)"
    fi
    # `cargo fuzz coverage` builds the instrumented binary; it is given one
    # seed because only its build is wanted: the inputs then run in a single
    # process below.
    local one
    one="$(mktemp -d)"
    cp "$(find "$dir/seeds/$t" -type f | head -n 1)" "$one"/
    (cd "$dir" && cargo +nightly fuzz coverage "${FUZZ_FLAGS[@]}" "$t" "$one" >/dev/null 2>&1) ||
        { echo "coverage: building $t with coverage instrumentation failed" >&2; exit 1; }
    rm -rf "$one"
    binary="$dir/target/x86_64-unknown-linux-gnu/coverage/x86_64-unknown-linux-gnu/release/$t"
    raw="$(mktemp -d)"
    echo "coverage: running $(find "${dirs[@]}" -type f | wc -l) inputs through $t" >&2
    LLVM_PROFILE_FILE="$raw/run.profraw" "$binary" -runs=0 -timeout=60 \
        -rss_limit_mb=2048 "${dirs[@]}" >"$raw/run.log" 2>&1 ||
        { tail -n 20 "$raw/run.log"; echo "coverage: an input failed" >&2; exit 1; }
    profile="$raw/run.profdata"
    "$llvm_bin/llvm-profdata" merge -sparse "$raw/run.profraw" -o "$profile"
    "$llvm_bin/llvm-cov" report "$binary" -instr-profile="$profile" "$root/filter/core/src" |
        sed "s|$root/||"
    rm -rf "$raw"
}

command="${1:-smoke}"
shift || true
ensure_tools
case "$command" in
    build)
        build "${@:-${ALL_TARGETS[@]}}"
        ;;
    run)
        t="${1:?fuzz.sh run TARGET [libFuzzer args]}"
        shift
        build "$t"
        fuzz "$t" "$(crate_dir "$t")/corpus-work/$t" "$@"
        ;;
    keep)
        keep "${1:?fuzz.sh keep TARGET}"
        ;;
    smoke)
        targets=("${@:-${ALL_TARGETS[@]}}")
        build "${targets[@]}"
        for t in "${targets[@]}"; do
            scratch="$(mktemp -d)"
            log="$(mktemp)"
            echo "==== smoke fuzz: $t (${SMOKE_SECONDS:-20} s)"
            status=0
            fuzz "$t" "$scratch" -max_total_time="${SMOKE_SECONDS:-20}" >"$log" 2>&1 || status=$?
            grep -E '^(#[0-9]+[[:space:]]+DONE|stat::|INFO: Running with|==[0-9]+== ERROR|thread .* panicked)' "$log" || true
            [ "$status" -ne 0 ] && tail -n 40 "$log"
            rm -rf "$scratch" "$log"
            if [ "$status" -ne 0 ]; then
                echo "smoke fuzz: $t found a crash (see $(crate_dir "$t")/artifacts/$t/)" >&2
                exit 1
            fi
        done
        ;;
    coverage)
        coverage "${1:?fuzz.sh coverage TARGET [DIR…]}" "${@:2}"
        ;;
    *)
        echo "usage: fuzz.sh build|run|keep|smoke|coverage …" >&2
        exit 2
        ;;
esac
