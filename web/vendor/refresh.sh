#!/usr/bin/env bash
# Refreshes the vendored browser libraries: installs the exact versions in
# package.json (checked against package-lock.json's integrity hashes), bundles
# each entry in src/ into one self-contained ES module beside this script,
# copies the licences, and records versions and SHA-256 checksums in
# VERSIONS.json. The bundles are committed, so serving the web app needs no
# build step; run this only to change a version.
#
#   web/vendor/refresh.sh            # reinstall from package-lock.json and rebuild
#   web/vendor/refresh.sh --upgrade  # re-resolve package.json (edit it first)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cp "$here/package.json" "$work/"
[[ -f "$here/package-lock.json" ]] && cp "$here/package-lock.json" "$work/"
cd "$work"
if [[ "${1:-}" == "--upgrade" || ! -f package-lock.json ]]; then
  npm install --no-audit --no-fund --ignore-scripts >/dev/null
else
  npm ci --no-audit --no-fund --ignore-scripts >/dev/null
fi
cp package-lock.json "$here/package-lock.json"

for entry in "$here"/src/*.js; do
  name="$(basename "$entry")"
  cp "$entry" "$work/entry-$name"
  ./node_modules/.bin/esbuild "$work/entry-$name" --bundle --format=esm --platform=browser \
    --target=es2022 --minify --legal-comments=eof --log-level=warning --outfile="$here/$name"
done

mkdir -p "$here/licenses"
rm -f "$here"/licenses/*
node - "$here" <<'JS'
const fs = require("fs"), path = require("path"), crypto = require("crypto");
const here = process.argv[2];
const lock = JSON.parse(fs.readFileSync(path.join(here, "package-lock.json"), "utf8"));
const packages = [];
for (const [key, meta] of Object.entries(lock.packages)) {
  if (!key || meta.dev) continue;
  const name = key.replace(/^.*node_modules\//, "");
  const dir = path.join(process.cwd(), key);
  const lic = fs.readdirSync(dir).find((f) => /^(licen[cs]e|copying)/i.test(f));
  if (lic) fs.copyFileSync(path.join(dir, lic), path.join(here, "licenses", name.replace("/", "__") + ".txt"));
  packages.push({ name, version: meta.version, license: meta.license || null, integrity: meta.integrity });
}
packages.sort((a, b) => a.name.localeCompare(b.name));
const bundles = {};
for (const f of fs.readdirSync(here).filter((f) => f.endsWith(".js")).sort()) {
  bundles[f] = "sha256-" + crypto.createHash("sha256").update(fs.readFileSync(path.join(here, f))).digest("hex");
}
const esbuild = lock.packages["node_modules/esbuild"].version;
fs.writeFileSync(path.join(here, "VERSIONS.json"),
  JSON.stringify({ bundler: `esbuild ${esbuild}`, bundles, packages }, null, 2) + "\n");
JS
echo "vendored: $(cd "$here" && ls *.js | tr '\n' ' ')"
