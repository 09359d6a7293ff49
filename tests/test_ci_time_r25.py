"""CI time and CI robustness (round 25).

* A test's command runs under a limit counted in seconds of CPU it can have (``background_runs.run_process``,
  which stretches with the machine's load and kills what the command left behind), never under
  ``subprocess.run(..., timeout=<wall seconds>)``: on CI's two cores, shared with another job, a child that imports
  torch took longer than a 60 s wall-clock limit without being stuck, and the test failed for nothing.
"""
import ast
import sys
from pathlib import Path

import background_runs

TESTS = Path(__file__).resolve().parent
# Not tests: the runner itself (its RUN_TIMEOUT is an hour, the last resort for a stuck run) and a script run by hand
NOT_TESTS = {"background_runs.py", "kill_sweep_r24.py"}
WALL_CLOCK_CALLS = {"subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output"}


def wall_clock_limits(source):
    """Line numbers of the ``subprocess.run``-like calls of ``source`` given a ``timeout=``."""
    if "timeout" not in source:  # (most files: no parse)
        return []
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and any(keyword.arg == "timeout" for keyword in node.keywords)
            and ast.unparse(node.func) in WALL_CLOCK_CALLS]


def test_no_test_runs_a_command_under_a_wall_clock_limit():
    assert wall_clock_limits("import subprocess\nsubprocess.run(['true'], timeout=60)\n") == [2]  # (the scan sees one)
    assert wall_clock_limits("background_runs.run_process(['true'], timeout=60)\n") == []
    found = {path.name: lines for path in sorted(TESTS.glob("*.py")) if path.name not in NOT_TESTS
             for lines in [wall_clock_limits(path.read_text())] if lines}
    assert found == {}, f"subprocess.run(..., timeout=...) flakes on a loaded CI: use background_runs.run_process {found}"


def test_run_process_feeds_input_and_takes_the_defaults_of_subprocess_run(tmp_path):
    done = background_runs.run_process([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
                                       input="piped", timeout=60)
    assert (done.returncode, done.stdout) == (0, "PIPED\n")
    done = background_runs.run_process([sys.executable, "-c", "import os; print(os.getcwd())"], cwd=tmp_path,
                                       timeout=60)
    assert done.stdout.strip() == str(tmp_path)
