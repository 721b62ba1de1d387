#!/bin/sh
# Serves dist/ on $PORT (Slipway sets PORT for every slot).
set -eu
cd "$(dirname "$0")/dist"
exec python3 -m http.server "${PORT:-8000}" --bind 127.0.0.1
