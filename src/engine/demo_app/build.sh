#!/bin/sh
# Builds the Space Game website into dist/.
set -eu
rm -rf dist
mkdir -p dist
cp src/index.html src/app.js src/style.css dist/
echo "ok" > dist/health
echo "built $(ls dist | wc -l) files into dist/"
