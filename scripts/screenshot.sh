#!/usr/bin/env bash
# A PNG of a run's report.html, rendered by headless Chromium (Debian's chromium package), for the README gallery.
#   bash scripts/screenshot.sh RUN_DIR docs/report.png [WIDTH,HEIGHT]
set -euo pipefail
page="$(realpath "$1")/report/report.html"
[ -f "$page" ] || { echo "screenshot: $page not found" >&2; exit 2; }
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="${3:-1200,2600}" --screenshot="$(realpath -m "$2")" "file://$page" 2>/dev/null
echo "$2"
