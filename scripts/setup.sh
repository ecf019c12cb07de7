#!/usr/bin/env bash
# Installs what building and testing Switchboard needs on Debian 12 (idempotent).
# Swift 6.3 itself is expected on PATH (or in /opt/swift); everything else comes from apt.
set -euo pipefail

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi
if ! command -v swift >/dev/null 2>&1; then
    echo "setup: Swift 6.3 is not installed (https://www.swift.org/install/linux/debian/12/)" >&2
    exit 1
fi

# Debian packages used by the tests and the README's examples.
APT_PACKAGES=(curl ca-certificates openssl pkg-config zlib1g-dev libmsgpack-dev chromium redis-server postgresql)

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# Python packages for the interop tests (PyPI).
if ! python3 -c "import websockets, msgpack, pytest, jwt, cryptography, httpx, prometheus_client" 2>/dev/null; then
    echo "setup: installing Python test packages"
    python3 -m pip install -q --disable-pip-version-check -r "$(dirname "${BASH_SOURCE[0]}")/../Tests/Interop/requirements.txt"
fi
