#!/usr/bin/env bash
# Refresh the twin page's vendored Niivue from the npm registry (needs npm): bash scripts/vendor_niivue.sh 0.69.0
# Writes serving/page/static/vendor/niivue.umd.js and prints its sha256 for the vendor README's table.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:?usage: vendor_niivue.sh VERSION}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@niivue/niivue@${version}" >/dev/null && tar xzf niivue-niivue-*.tgz)
cp "$work/package/dist/niivue.umd.js" serving/page/static/vendor/niivue.umd.js
sha256sum serving/page/static/vendor/niivue.umd.js
