#!/usr/bin/env bash
# Install everything the test suites need, then run all of them:
#   tests/   unit and property tests
#   compat/  real clients (kafka-python, confluent-kafka, aiokafka, kcat, kafkajs)
#            against real kbroker processes that the fixtures start and stop.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not groups" -x
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v kcat >/dev/null 2>&1; then
    echo "test.sh: installing kcat"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null
fi

echo "test.sh: installing kbroker with its test extra"
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[test]'

if command -v npm >/dev/null 2>&1; then
    echo "test.sh: installing compat/js (kafkajs)"
    npm ci --prefix compat/js --no-audit --no-fund --loglevel=error
else
    echo "test.sh: npm not found: the kafkajs tests will be skipped"
fi

set +e
"$PYTHON" -m pytest -ra "$@"
code=$?
set -e

case "$code" in
    0) echo "test.sh: PASSED (all collected tests passed)" ;;
    5) echo "test.sh: FAILED: pytest collected no tests"; code=1 ;;
    *) echo "test.sh: FAILED (pytest exit code $code)" ;;
esac
exit "$code"
