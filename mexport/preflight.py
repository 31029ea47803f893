"""Preflight (``mexport doctor``): capture each role graph once with ``torch.export``, as the
exports will, and say before any slow step what will not convert, what will not run on the
delegate, and which rewrites the export applies, each with the module path and source line.

Runtime-neutral: what a target cannot take comes from the runtime (``Runtime.preflight``).
"""

from __future__ import annotations

from .findings import Finding

__all__ = ["Finding", "preflight"]


def preflight(pipeline, targets: list[str], roles: tuple[str, ...] = ("fused",)) -> list[Finding]:
    from .capture import capture
    from .errors import ConversionError
    from .runtimes import get_runtime

    findings: list[Finding] = []
    for role in roles:
        graph, args = pipeline.graph(role), pipeline.example_inputs(role)
        try:
            captured = capture(graph, args)
        except ConversionError as e:
            findings.append(Finding("all", role, "error", "capture", str(e)))
            continue
        except Exception as e:  # torch.export's own failure: its first line names the construct
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            findings.append(Finding("all", role, "error", "capture", f"torch.export could not capture the graph: {first[:300]}"))
            continue
        for name in targets:
            findings += get_runtime(name).preflight(captured, role)
    return findings
