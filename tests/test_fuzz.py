"""The parser fuzz targets (``tests/fuzz/targets.py``), bounded, on every run of the suite.

Hypothesis drives every target with random bytes and with mutations of the
committed seed corpus; where atheris is installed (x86_64 wheels), each
target also gets a short coverage-guided libFuzzer run over that corpus,
in a subprocess, writing nothing into the repository.  ``nox -s fuzz``
runs atheris for longer.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trinomite.protocol.requests import RequestParser

from .fuzz.targets import TARGETS

FUZZ = Path(__file__).resolve().parent / "fuzz"
CORPUS = {name: sorted((FUZZ / "corpus" / name).iterdir()) for name in TARGETS}
#: libFuzzer inputs per target in the bounded run.
RUNS = 20_000


def seeds_and_mutations(target: str) -> st.SearchStrategy[bytes]:
    seeds = [path.read_bytes() for path in CORPUS[target]]

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 4))):
            at = draw(st.integers(0, len(data)))
            data[at : at + draw(st.integers(0, 3))] = draw(st.binary(max_size=4))
        return bytes(data)

    return st.one_of(st.binary(max_size=512), mutated())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_seed_passes(target: str) -> None:
    assert CORPUS[target], f"no seeds for {target}"
    for path in CORPUS[target]:
        TARGETS[target](path.read_bytes())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_random_and_mutated_input_never_breaks_a_parser(target: str) -> None:
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(seeds_and_mutations(target))
    def check(data: bytes) -> None:
        TARGETS[target](data)

    check()


def test_an_empty_read_is_nothing_to_parse() -> None:
    """Found by the fuzzer: an empty chunk made the fast path index past the end."""
    parser = RequestParser()
    parser.feed(b"")
    assert parser.parse() == []
    assert parser.error is None


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None, reason="atheris has wheels for x86_64 only"
)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_coverage_guided_run(target: str, tmp_path: Path) -> None:
    found = tmp_path / "found"
    found.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "fuzz_parsers.py"),
            f"-runs={RUNS}",
            f"-artifact_prefix={tmp_path}/",
            str(found),
            str(FUZZ / "corpus" / target),
        ],
        env={**os.environ, "FUZZ_TARGET": target},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"Done {RUNS} runs" in done.stderr
