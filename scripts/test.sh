#!/usr/bin/env bash
# The test command: installs the system packages if missing, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --with-python
swift build --build-tests
# XCTest only: no Swift Testing suites exist, and its "0 tests" summary would be the closing line.
swift test --skip-build --disable-swift-testing
