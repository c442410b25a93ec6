#!/usr/bin/env bash
# Runs every test of the dataserver on a fresh machine: installs what the tests need, builds
# once, then runs the Python client tests and all Rust test binaries in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools the tests drive: curl and wget (HTTP clients users have), openssl (test
# certificates), Python with venv (the Python client tests), rclone (an S3 client users have).
# Installed with apt when missing.
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
command -v wget >/dev/null || missing+=(wget)
command -v rclone >/dev/null || missing+=(rclone)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
        echo "installing ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "ops/test.sh needs: ${missing[*]} (install them, then run it again)" >&2
        exit 1
    fi
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest (test runner)"
    cargo install cargo-nextest --locked
fi

# Doc tests first: nextest does not run them, and its summary should be the last word.
cargo test --workspace --doc --locked

# Python integration tests (tests/python): the real daemon binary driven by the clients users
# have, python-requests and astropy.io.fits reading over fsspec's HTTP filesystem, and on the
# S3 listener boto3, s3fs and rclone. The venv
# lives under target/ so git ignores it and `cargo clean` removes it. pip runs only when
# requirements.txt (or the venv's Python) changed since the last successful install: the
# marker file holds both, and is written after the install so a failed one is retried.
python_venv=target/python-venv
python_requirements=tests/python/requirements.txt
if [[ ! -x $python_venv/bin/python ]]; then
    echo "creating the Python test venv in $python_venv"
    python3 -m venv "$python_venv"
fi
python_wanted="$(cat "$python_requirements"; "$python_venv/bin/python" --version)"
if [[ "$(cat "$python_venv/requirements.installed" 2>/dev/null)" != "$python_wanted" ]]; then
    echo "installing $python_requirements into $python_venv"
    "$python_venv/bin/python" -m pip install --disable-pip-version-check -q -r "$python_requirements"
    printf '%s\n' "$python_wanted" >"$python_venv/requirements.installed"
fi
# The tests start the binaries themselves (one daemon per test; `ds` for the README's
# command-line snippets), so build them once first.
cargo build --locked -p daemon --bin dataserver -p client --bin ds
# No bytecode or .pytest_cache in the source tree: git ignores only /target.
PYTHONDONTWRITEBYTECODE=1 DATASERVER_BIN=target/debug/dataserver DS_BIN=target/debug/ds \
    "$python_venv/bin/python" -m pytest -q -n 2 -p no:cacheprovider tests/python

cargo nextest run --workspace --locked --no-fail-fast "$@"
