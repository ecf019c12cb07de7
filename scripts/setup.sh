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
APT_PACKAGES=(curl ca-certificates)

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
