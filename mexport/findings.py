"""A preflight finding: what a target will not take in a captured graph, where, and the fix."""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("error", "warning", "rewrite")


@dataclass(frozen=True)
class Finding:
    target: str  # a runtime name, or "all"
    role: str
    severity: str  # error: will not convert; warning: converts, runs off the delegate; rewrite: applied by the export
    where: str  # module path (file:line)
    message: str
    fix: str = ""
    precisions: tuple[str, ...] = ()  # the export precisions it concerns; () all

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}")

    def concerns(self, precision: str) -> bool:
        return not self.precisions or precision in self.precisions

    def line(self) -> str:
        return f"{self.severity:8s} {self.target}/{self.role}: {self.where}: {self.message}" + (f" -- fix: {self.fix}" if self.fix else "")
