#!/usr/bin/env bash
# Fetch the hashicorp/vault 5.6.0 provider schema for the offline Terraform checks.
#
# The schema ships in the npm package @cdktf/provider-vault 15.6.1 (MPL-2.0), as its jsii assembly.
# tools/vault-schema-stub/ serves it to Terraform; see the README there.
#
#   tools/fetch-vault-schema.sh [CACHE_DIR]     (default: <repo>/.venv/cache)
#
# Prints the absolute path of the verified tarball on stdout. Idempotent: a cached tarball that passes the
# integrity check is reused without touching the network. Fails (exit 1) if npm is missing, the fetch fails,
# or the tarball does not match the pinned npm integrity.
set -euo pipefail

readonly PACKAGE='@cdktf/provider-vault@15.6.1'
readonly TARBALL='cdktf-provider-vault-15.6.1.tgz'
readonly INTEGRITY='sha512-sGEt8z20Ya8eXsduOipXH9FwVdo5FNfDOtJDtwRmNMgSioW1B+GyIUVWFERXY4gBtr2BlR2+yOQi3qqR050zXQ=='

die() { echo "fetch-vault-schema: ERROR: $*" >&2; exit 1; }

command -v npm >/dev/null || die "npm is not installed; it is needed to fetch $PACKAGE"
command -v node >/dev/null || die "node is not installed; it is needed to verify $PACKAGE"

repo=$(cd "$(dirname "$0")/.." && pwd)
cache_dir=${1:-$repo/.venv/cache}
mkdir -p "$cache_dir"
cache_dir=$(cd "$cache_dir" && pwd)
target=$cache_dir/$TARBALL

# npm's integrity string (Subresource Integrity format) of a file.
integrity_of() {
    node -e 'const c = require("crypto"), fs = require("fs");
             process.stdout.write("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"));' "$1"
}

if [[ -f $target ]]; then
    if [[ $(integrity_of "$target") == "$INTEGRITY" ]]; then
        echo "$target"
        exit 0
    fi
    echo "fetch-vault-schema: cached $target does not match the pinned integrity; fetching it again" >&2
    rm -f -- "$target"
fi

tmp=$(mktemp -d "$cache_dir/.fetch.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
echo "fetch-vault-schema: npm pack $PACKAGE" >&2
(cd "$tmp" && npm pack --loglevel=error --pack-destination "$tmp" "$PACKAGE" >/dev/null) \
    || die "npm pack $PACKAGE failed (is the npm registry reachable?)"
[[ -f $tmp/$TARBALL ]] || die "npm pack did not produce $TARBALL"

actual=$(integrity_of "$tmp/$TARBALL")
if [[ $actual != "$INTEGRITY" ]]; then
    die "integrity mismatch for $PACKAGE
  expected $INTEGRITY
  got      $actual
The tarball was discarded. Do not work around this: the schema must be exactly the one that was reviewed."
fi
mv -- "$tmp/$TARBALL" "$target"
echo "$target"
