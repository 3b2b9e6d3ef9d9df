"""The test harness that the tests and the benchmarks share; not part of the codex-ci package.

- ``servers``: the one loopback-server base (free port, a child process waited on until healthy, an in-thread
  HTTP server, one teardown);
- ``tokenserver``: the strict loopback OAuth token endpoint (standard library only; the demo runs it);
- ``fake_secretmanager`` / ``fake_github``: GCP Secret Manager (gRPC) and GitHub's Actions-secrets REST API;
- ``faultproxy``: an HTTP proxy that injects faults between a client and a real server;
- ``targets``: a running store and a fresh secret location on it, per store kind; ``fixtures``: their pytest
  fixtures (a plugin that tests/conftest.py loads);
- ``crashkit``: the kill -9 tests' tools; ``checks``: canary and scrubbing checks; ``soak``: fast or soak sizes;
- ``tables``: the token endpoint's answers and the stores' faults, each with its exit code (tests/properties/).
"""
