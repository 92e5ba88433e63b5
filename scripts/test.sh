#!/usr/bin/env bash
# Set up and run every test: the README's test line.  Installs the Debian tools tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=""
  command -v fsck.fat >/dev/null || missing="$missing dosfstools"
  command -v mtdump >/dev/null || missing="$missing simh"
  command -v mcopy >/dev/null || missing="$missing mtools"
  command -v nbdcopy >/dev/null || missing="$missing libnbd-bin"
  command -v nbdsh >/dev/null || missing="$missing python3-libnbd"
  command -v qemu-img >/dev/null || missing="$missing qemu-utils"
  if [ -n "$missing" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null 2>&1 \
      || echo "warning: could not install$missing" >&2
  fi
fi
python -m pip install --quiet -e '.[test]'
# An editable install leaves san as source: where PYTHONDONTWRITEBYTECODE is set (CI images,
# Docker) every actor's process would compile the ~100 modules it imports, again and again.
python -m compileall -q san
exec python -m pytest "$@"
