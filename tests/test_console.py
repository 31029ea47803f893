"""Converters that keep quiet: their output (Python and C++ alike) goes to OUT/convert.log, the
terminal shows mexport's own progress and verdict, a converter failure names the log and quotes it,
and -v streams everything.

The line counts are measured as a person sees them: the CLI in a subprocess on a pseudo-terminal
(C++ output to file descriptors 1 and 2 shows there, and nowhere a CliRunner can look), its screen
rebuilt from the bytes (rich redraws its bars in place). The reference model's int8 exports are
counted through the CliRunner (conftest's shared fixture)."""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest

from .conftest import BYO, REFERENCE_OUTPUT, ROOT, TINY, invoke, one_error_line

TINY_REFINE = f"{BYO.parent / 'tiny_refine.py'}:factory"
MAX_LINES, MAX_QUIET_LINES = 15, 3


def screen(raw: bytes) -> list[str]:
    """The non-empty lines a terminal shows after receiving ``raw``: text, CR, LF, cursor up/down,
    erase in line; other escape sequences (colours, cursor visibility) change nothing shown."""
    rows, row, col = [""], 0, 0
    text = raw.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\x1b":
            m = re.match(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07]*\x07|\x1b.", text[i:])
            i += len(m.group(0))
            if m.group(2) is not None:
                n = int(m.group(1)) if m.group(1).isdigit() else 1
                if m.group(2) == "A":
                    row = max(0, row - n)
                elif m.group(2) == "B":
                    row += n
                elif m.group(2) == "K":
                    rows[row] = "" if m.group(1) == "2" else rows[row][:col]
                elif m.group(2) == "G":
                    col = n - 1
            while len(rows) <= row:
                rows.append("")
            continue
        if c == "\r":
            col = 0
        elif c == "\n":
            row, col = row + 1, 0
            while len(rows) <= row:
                rows.append("")
        elif c >= " ":
            line = rows[row].ljust(col)
            rows[row] = line[:col] + c + line[col + 1:]
            col += 1
        i += 1
    return [r.rstrip() for r in rows if r.strip()]


def on_terminal(args: list[str], cwd: Path, timeout: float = 600) -> tuple[int, list[str]]:
    """``mexport ARGS`` with stdin, stdout and stderr on a 120x40 pseudo-terminal: (exit code, screen)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "mexport.cli", *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    raw = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError(f"timed out; screen so far: {screen(raw)[-5:]}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            raw += chunk
    finally:
        os.close(master)
    return proc.wait(timeout=60), screen(raw)


# Converter output that reached the terminal before mexport kept it in convert.log, one pattern per
# converter (what the issue counted): none may show.
NOISE = re.compile(r"I0000|WARNING:root|LiteRT-Torch Convert|Please consider|_MLModelProxy|Running MIL|Converting PyTorch|"
                   r"TensorFlow|XNNPACK delegate|FutureWarning|UserWarning|it/s\]", re.I)

COMMANDS = {
    "tflite --int8": (["tflite", "--int8"], "LiteRT-Torch Convert"),
    "onnx --int8": (["onnx", "--int8"], "pre-processing before quantization"),
    "coreml": (["coreml"], "Running MIL"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_terminal_shows_mexport_and_the_log_has_the_converters(name, tmp_path):
    args, in_log = COMMANDS[name]
    code, lines = on_terminal([*args, "--model", TINY_REFINE, "-o", str(tmp_path / "out")], tmp_path)
    assert code == 0, lines
    assert len(lines) <= MAX_LINES, "\n".join(lines)
    assert not [ln for ln in lines if NOISE.search(ln)], "\n".join(lines)
    assert any(ln.strip().startswith("PASS fused") for ln in lines) and any(ln.startswith("wrote ") for ln in lines), lines
    log = (tmp_path / "out" / "convert.log").read_text()
    assert in_log in log  # the converters said it, the terminal did not show it
    code, lines = on_terminal([*args, "--model", TINY_REFINE, "-o", str(tmp_path / "out"), "-q"], tmp_path)
    assert code == 0 and len(lines) <= MAX_QUIET_LINES and lines[-1] == str(tmp_path / "out"), lines


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_the_reference_int8_exports_print_a_screenful(reference_int8_exports, target):
    """`mexport onnx --int8` and `mexport tflite --int8` on the reference model (conftest's
    fixture runs them through the CliRunner: Python-level output; C++ output is the test above's)."""
    out = REFERENCE_OUTPUT[target]
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) <= MAX_LINES and not [ln for ln in lines if NOISE.search(ln)], out
    assert sum(ln.strip().startswith("PASS") for ln in lines) == 2  # fused and coarse+refine, gated


def test_verbose_streams_the_converters_too(tmp_path):
    r = invoke("onnx", "--int8", "--model", TINY, "-o", tmp_path / "o", "-v")
    log = (tmp_path / "o" / "convert.log").read_text()
    assert r.exit_code == 0 and "pre-processing before quantization" in log
    assert "pre-processing before quantization" in r.output  # streamed as well as kept


def test_a_converter_failure_names_its_log_and_quotes_it(tmp_path):
    """litert-torch has no lowering for a matrix inverse: one line, naming the op, the log, and
    what the converter said; the log is there; no model file is."""
    model = tmp_path / "m.py"
    model.write_text(textwrap.dedent("""
        import torch
        from mexport import MattingModel, PipelineSpec

        class M(torch.nn.Module):
            def forward(self, x):
                return torch.sigmoid(x[:, :1] + torch.linalg.inv(x[0, 0, :4, :4]).sum())

        def factory():
            return MattingModel(coarse=M(), spec=PipelineSpec(coarse_size=(32, 32), refine_size=(64, 64)), name="inv")
    """))
    out = tmp_path / "out"
    line = one_error_line(invoke("tflite", "--model", f"{model}:factory", "-o", out), 2,
                          "linalg_inv_ex", f"converter output: {out / 'convert.log'}", "it says: ")
    assert (out / "convert.log").is_file() and sorted(p.name for p in out.iterdir()) == ["convert.log"]
    quoted = line.split("it says: ", 1)[1]
    assert quoted.strip(") ") and quoted.split(" | ")[0].rstrip(")") in (out / "convert.log").read_text()


# ----------------------------------------------------------------------------- mexport.console

SCRIPT = """
import logging, os, subprocess, sys, warnings
from mexport.console import ConverterOutput, terminal

logging.basicConfig()  # a root handler on stderr, made before the capture (as absl's and others are)
with ConverterOutput(sys.argv[1], echo=sys.argv[2] == "echo"):
    print("python stdout")
    sys.stderr.write("python stderr\\n")
    warnings.warn("a python warning")
    logging.getLogger("conv").warning("a logging line")
    os.write(1, b"fd 1 from C\\n")
    os.write(2, b"fd 2 from C\\n")
    subprocess.run([sys.executable, "-c", "import os; os.write(2, b'a child process\\\\n')"])
    terminal().write("mexport's own line\\n")
print("after: stdout")
sys.stderr.write("after: stderr\\n")
"""
THIRD_PARTY = ["python stdout", "python stderr", "a python warning", "a logging line", "fd 1 from C", "fd 2 from C",
               "a child process"]


@pytest.mark.parametrize("mode", ["log", "echo"])
def test_converter_output_goes_to_the_log_and_mexport_to_the_terminal(mode, tmp_path):
    log = tmp_path / "convert.log"
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(log), mode], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0, r.stderr
    kept = log.read_text()
    assert all(s in kept for s in THIRD_PARTY), kept
    assert "mexport's own" not in kept and "after:" not in kept
    assert r.stdout == "after: stdout\n"  # stdout is the caller's again, and never got converter output
    shown = r.stderr
    assert "mexport's own line" in shown and "after: stderr" in shown
    for s in THIRD_PARTY:
        assert (s in shown + r.stdout) == (mode == "echo"), (s, mode, shown)


def test_quote_picks_the_lines_that_say_what_failed(tmp_path):
    from mexport.console import quote

    log = tmp_path / "convert.log"
    log.write_text("(00:00) [START] Convert\nI0000 loading\nTraceback (most recent call last):\n  File \"x.py\"\n"
                   "RuntimeError: op aten.foo is not supported\n(00:01) [DONE]\n")
    assert quote(log) == "RuntimeError: op aten.foo is not supported"
    log.write_text("Failed to load _MLModelProxy: No module named 'coremltools.libcoremlpython'\nsome\nlines\n")
    assert quote(log) == ""  # nothing in it reports an error: nothing to quote
    assert quote(tmp_path / "missing.log") == ""
