#!/usr/bin/env bash
# Short smoke fuzz for CI and before a commit: every target for
# SMOKE_SECONDS (default 20) from the committed seeds and corpus; a crash
# fails. `smoke.sh jwt request` runs only those. See fuzz.sh.
exec "$(dirname "$0")/fuzz.sh" smoke "$@"
