#!/usr/bin/env bash
# Chromium for the gallery's browser test (`make browser-setup`, run by `make test-all`): Debian's
# package with apt when it is absent and this is root; otherwise say why, and the test skips.
set -uo pipefail
if command -v chromium >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "browser-setup: chromium is absent and cannot be installed here (needs root and apt-get);" \
         "the gallery's browser test will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq chromium; } >/tmp/ggcam-browser-setup.log 2>&1; then
    echo "browser-setup: apt-get could not install chromium (log: /tmp/ggcam-browser-setup.log);" \
         "the gallery's browser test will skip" >&2
fi
exit 0
