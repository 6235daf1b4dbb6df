"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers that read untrusted bytes.

``FUZZ_TARGET`` picks one of ``targets.TARGETS`` (requests, frames,
replies, mc_requests or mc_replies); see ``targets`` for what each checks.
Run by ``tests/test_fuzz.py``
for a bounded number of inputs over the committed seed corpus in
``tests/fuzz/corpus/<target>/``, and for longer by ``nox -s fuzz``::

    FUZZ_TARGET=requests python tests/fuzz/fuzz_parsers.py -runs=100000 \\
        new/ tests/fuzz/corpus/requests

(libFuzzer adds what it finds to the first directory only.)
"""

from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports():
    from targets import TARGETS


def main() -> None:
    atheris.Setup(sys.argv, TARGETS[os.environ.get("FUZZ_TARGET", "requests")])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
