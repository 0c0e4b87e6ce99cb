#!/usr/bin/env bash
# A PNG of a run's report.html (or of any self-contained page fmtool writes, such as fmtool compare --html),
# rendered by headless Chromium (Debian's chromium package), for the README gallery.
#   bash scripts/screenshot.sh RUN_DIR docs/report.png [WIDTH,HEIGHT]
#   bash scripts/screenshot.sh compare.html docs/compare.png 1200,900
set -euo pipefail
if [ -d "$1" ]; then page="$(realpath "$1")/report/report.html"; else page="$(realpath -m "$1")"; fi
[ -f "$page" ] || { echo "screenshot: $page not found" >&2; exit 2; }
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="${3:-1200,2600}" --screenshot="$(realpath -m "$2")" "file://$page" 2>/dev/null
echo "$2"
