#!/usr/bin/env bash
# Installs what skillbox needs on a Debian bookworm host, as root: runsc,
# busybox-static and debootstrap (only when one is missing), and checks that
# a Rust toolchain is on PATH. scripts/demo.sh and scripts/test.sh run it.
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_root
ensure_debian_packages "${SKILLBOX_DEBIAN_PACKAGES[@]}"
require_cargo
echo "runsc: $(runsc --version 2>&1 | head -n 1)"
echo "cargo: $(cargo --version)"
