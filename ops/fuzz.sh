#!/usr/bin/env bash
# Fuzzes the parsers of untrusted bytes (the FITS and tar indexers) with libFuzzer, for a bounded
# time, on the stable toolchain: the coverage instrumentation cargo-fuzz uses is passed as plain
# -C flags, and no sanitizer is needed for safe Rust. Seeds come from files generated here (a
# multi-extension FITS file, tar archives); crashes land in storage/fuzz/artifacts/.
#
# Usage: ops/fuzz.sh                 (each target runs FUZZ_SECONDS, default 60)
# With a nightly toolchain and cargo-fuzz the same targets also run as
#   (cd storage/fuzz && cargo +nightly fuzz run fits_index)
set -euo pipefail
cd "$(dirname "$0")/../storage/fuzz"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGET="$(rustc -vV | sed -n 's/^host: //p')"

RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --bins --target "$TARGET"

mkdir -p corpus/fits_index corpus/tar_index artifacts
python3 ../../ops/bench/fits/make_mef.py corpus/fits_index/seed-mef.fits 3 16 8
python3 - corpus/tar_index <<'PY'
import io, sys, tarfile
for form, name in ((tarfile.GNU_FORMAT, "gnu"), (tarfile.PAX_FORMAT, "pax"), (tarfile.USTAR_FORMAT, "ustar")):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=form) as archive:
        for path, data in (("obs.ms/table.dat", b"table"), ("obs.ms/" + "x" * (40 if name == "ustar" else 120) + "/f0", b"1234")):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    open(f"{sys.argv[1]}/seed-{name}.tar", "wb").write(buffer.getvalue())
PY
for target in fits_index tar_index; do
    echo "fuzzing $target for $SECONDS_EACH s"
    "target/$TARGET/release/$target" "corpus/$target" -artifact_prefix=artifacts/ \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 2>&1 | tail -n 4
done
