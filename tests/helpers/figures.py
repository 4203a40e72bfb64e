"""The reliability figures (issue 7): what the reliability suite (``tests/reliability/``) tried,
printed at the end of a run by ``tests/conftest.py``."""

from __future__ import annotations

import contextlib
from pathlib import PurePosixPath
from typing import Optional


def is_reliability_test(nodeid: str) -> bool:
    """``nodeid`` (``tests/reliability/test_x.py::test_y[...]``) is a test of the reliability suite."""
    return PurePosixPath(nodeid.split("::", 1)[0]).parent.name == "reliability"


class Figures:
    """What the reliability suite tried, printed at the end of ``make test`` (``terminal_summary``).

    ``tried(kind, n)`` counts attempts: ``bad input`` (one input through one entry point and
    mode), ``fault`` (one injected fault: a kill, a full disk, an unwritable folder, ...),
    ``fuzz`` (one generated example) and ``attack`` (one security probe). ``outcome(kind, ok,
    what)`` records the attempt and, when it ended in anything but a clear error or a correct
    output, what happened (the test then fails). ``expecting_defect(what)``: inside it, bad
    outcomes are the known defect ``what`` of a file this suite does not own (its test is
    ``xfail(strict=True)`` until the owner fixes it), listed apart.
    """

    KINDS = ("bad input", "fault", "fuzz", "attack")

    def __init__(self) -> None:
        self.counts = {k: 0 for k in self.KINDS}
        self.bad: list[str] = []
        self.known_defects: dict[str, int] = {}
        self.failed_tests: list[str] = []
        self._expecting: Optional[str] = None

    def tried(self, kind: str, n: int = 1) -> None:
        self.counts[kind] += n

    def outcome(self, kind: str, ok: bool, what: str, count: bool = True) -> bool:
        """``count=False``: one more check of an attempt already counted (each record after one kill)."""
        if count:
            self.tried(kind)
        if not ok:
            if self._expecting is not None:
                self.known_defects[self._expecting] = self.known_defects.get(self._expecting, 0) + 1
            else:
                self.bad.append(f"{kind}: {what}")
        return ok

    @contextlib.contextmanager
    def expecting_defect(self, what: Optional[str]):
        """Bad outcomes inside are the known defect ``what`` (an ``xfail(strict=True)`` test), not news."""
        self._expecting = what
        try:
            yield
        finally:
            self._expecting = None

    def lines(self) -> list[str]:
        c = self.counts
        out = [
            f"bad inputs tried: {c['bad input']}; faults injected: {c['fault']}; fuzz examples run: {c['fuzz']}; "
            f"security probes: {c['attack']}",
            f"ended in anything but a clear error or a correct output: {len(self.bad)} (target 0); "
            f"failed reliability tests: {len(self.failed_tests)}",
        ]
        out += [f"  {b}" for b in self.bad[:20]]
        out += [f"  failed test: {t}" for t in self.failed_tests[:20]]
        if self.known_defects:
            n = sum(self.known_defects.values())
            out.append(f"known defects in files owned elsewhere, proven by xfail(strict) tests: "
                       f"{len(self.known_defects)} ({n} outcome(s))")
            out += [f"  {k}" for k in self.known_defects]
        return out


FIGURES = Figures()
