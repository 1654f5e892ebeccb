"""The end-to-end run's report: timed steps, gates, and free-form sections, printed once."""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .kube import StepError, log


@dataclass
class Gate:
    name: str
    passed: bool | None  # None: skipped
    figure: str


@dataclass
class Report:
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    sections: dict[str, list[str]] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str, fatal: bool = True) -> Iterator[None]:
        """Time a step; a failure is recorded as a failed gate and, when fatal, ends the run."""
        log(f"== {name}")
        started = time.monotonic()
        status = "ok"
        try:
            yield
        except Exception as exc:
            status = "FAILED"
            detail = str(exc) if isinstance(exc, StepError) else traceback.format_exc(limit=4)
            self.gate(name, False, detail.strip().splitlines()[0][:200])
            self.add(f"error in {name}", detail.strip().splitlines())
            log(f"   {name} failed: {detail.strip()}")
            if fatal:
                raise
        finally:
            seconds = time.monotonic() - started
            self.steps.append((name, seconds, status))
            log(f"   {name}: {status} in {seconds:.0f}s")

    def gate(self, name: str, passed: bool | None, figure: str) -> None:
        self.gates.append(Gate(name, passed, figure))
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[passed]
        log(f"   gate {mark} {name}: {figure}")

    def add(self, section: str, lines: list[str]) -> None:
        self.sections.setdefault(section, []).extend(lines)

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed is not False for g in self.gates)

    def text(self) -> str:
        out = ["", "=" * 100, "fraudstream end-to-end report", "=" * 100, "", "Steps:"]
        out += [f"  {name:<46} {sec:>7.0f} s  {status}" for name, sec, status in self.steps]
        for section, lines in self.sections.items():
            out += ["", f"{section}:"] + [f"  {line}" for line in lines]
        out += ["", "Gates:"]
        for g in self.gates:
            mark = {True: "PASS", False: "FAIL", None: "SKIP"}[g.passed]
            out.append(f"  {mark}  {g.name:<44} {g.figure}")
        verdict = "PASSED" if self.passed else "FAILED"
        out += ["", f"RESULT: {verdict} ({sum(g.passed is False for g in self.gates)} failed)"]
        return "\n".join(out)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "report.txt").write_text(self.text() + "\n")
        data = {
            "steps": [{"name": n, "seconds": round(s, 1), "status": st} for n, s, st in self.steps],
            "gates": [g.__dict__ for g in self.gates],
            "sections": self.sections,
            "passed": self.passed,
        }
        (directory / "report.json").write_text(json.dumps(data, indent=2) + "\n")
