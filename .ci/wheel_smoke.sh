#!/usr/bin/env bash
# The distribution (issue 13): build the wheel and the sdist, check their metadata and the
# wheel's platform tag, install the wheel into a fresh virtual environment whose PATH has no Rust
# toolchain, and serve a real client from it (.ci/wheel_smoke.py); then check that the sdist
# builds and installs where there is one, and serves the same way.
# Needs maturin, cargo, twine and auditwheel; .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "wheel smoke: $*"; }
fail() {
    echo "wheel smoke: FAILED: $*" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dist=$work/dist

step "building the wheel and the sdist into $dist"
maturin build --release --out "$dist" || fail "maturin build --release"
maturin sdist --out "$dist" || fail "maturin sdist"
wheels=("$dist"/*.whl)
sdists=("$dist"/*.tar.gz)
((${#wheels[@]} == 1 && ${#sdists[@]} == 1)) || fail "expected one wheel and one sdist in $dist"
wheel=${wheels[0]}
sdist=${sdists[0]}

# One wheel for every CPython from 3.11 (abi3), for manylinux: the name says so, and auditwheel,
# which reads the symbols the extension links, agrees.
[[ $(basename "$wheel") == starlette_cometd-*-cp311-abi3-manylinux_*.whl ]] ||
    fail "$(basename "$wheel") is not tagged cp311-abi3-manylinux"
audit=$(python -m auditwheel show "$wheel") || fail "auditwheel show $wheel"
echo "$audit"
grep -q 'consistent with the following platform tag: "manylinux_' <<<"$audit" ||
    fail "auditwheel finds $(basename "$wheel") consistent with no manylinux tag"

python -m twine check --strict "$wheel" "$sdist" || fail "twine check"

# The smoke test's client, pinned as in the test extra.
client=$(python -c '
import tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]
print(next(r for r in extra if r.startswith("aiocometd")))')

# A PATH with the virtual environment's commands only: no cargo or rustc, wherever the machine
# keeps them (in CI they may come from Debian, in /usr/bin).
python -m venv "$work/wheel-venv" || fail "python -m venv"
bare=$work/wheel-venv/bin
for tool in cargo rustc; do
    found=$(PATH=$bare && hash -r && command -v "$tool") && fail "$tool is on the bare PATH: $found"
done
step "installing $(basename "$wheel") with PATH=$bare (no cargo, no rustc), binaries only"
env PATH="$bare" "$bare/python" -m pip install -q --only-binary :all: "$wheel" "$client" ||
    fail "installing the wheel without a Rust toolchain"
env PATH="$bare" "$bare/python" .ci/wheel_smoke.py || fail "the smoke test of the wheel"

# The sdist is for machines the wheel does not fit: it needs cargo, and builds with it.
step "installing $(basename "$sdist") (built by pip with cargo)"
python -m venv "$work/sdist-venv" || fail "python -m venv"
"$work/sdist-venv/bin/python" -m pip install -q "$sdist" "$client" ||
    fail "building and installing the sdist"
"$work/sdist-venv/bin/python" .ci/wheel_smoke.py || fail "the smoke test of the sdist"

step "passed"
