"""Start Autobahn|Testsuite's fuzzing server on 127.0.0.1 only (runs on Python 2.7).

``wstest -m fuzzingserver`` listens on every interface; this does the same as that
command with the listening socket bound to the loopback interface, so the server is
never reachable from another machine. Usage (inside compliance/.venv27)::

    python fuzzingserver.py SPEC.json
"""

import sys

from autobahntestsuite import fuzzing, wstest

_listen = fuzzing.listenWS


def listen_on_loopback(factory, contextFactory=None, backlog=50, interface=""):
    """fuzzing.listenWS, bound to 127.0.0.1."""
    return _listen(factory, contextFactory, backlog, "127.0.0.1")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python fuzzingserver.py SPEC.json")
    fuzzing.listenWS = listen_on_loopback
    sys.argv = ["wstest", "--mode", "fuzzingserver", "--spec", sys.argv[1], "--webport", "0"]
    wstest.run()
