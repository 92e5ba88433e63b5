#!/usr/bin/env bash
# Set up and run every test: the README's test line.  Installs the Debian tools tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=""
  command -v fsck.fat >/dev/null || missing="$missing dosfstools"
  command -v mtdump >/dev/null || missing="$missing simh"
  command -v mdir >/dev/null || missing="$missing mtools"
  if [ -n "$missing" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null 2>&1 \
      || echo "warning: could not install$missing" >&2
  fi
fi
python -m pip install --quiet -e '.[test]'
exec python -m pytest "$@"
