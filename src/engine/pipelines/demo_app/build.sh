#!/bin/sh
# Builds the Space Game website into dist/, stamped with the release's version.
set -eu
rm -rf dist
mkdir -p dist
version="${SLIPWAY_VERSION:-dev}"
sed "s/@VERSION@/$version/g" src/index.html > dist/index.html
cp src/app.js src/style.css dist/
echo "ok" > dist/health
echo "$version" > dist/version.txt
echo "built $version: $(ls dist | wc -l) files into dist/"
