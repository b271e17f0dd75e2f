"""The runnable examples in examples/*.py work as the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from guest import REPO


def run_example(name: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "sdks", "python")}
    return subprocess.run([sys.executable, os.path.join(REPO, "examples", name)], capture_output=True, text=True, env=env, timeout=600)


def test_hello_prints_hello_and_the_exit_code(daemon):
    run = run_example("hello.py")
    assert (run.returncode, run.stdout, run.stderr) == (0, "hello 0\n", "")


def test_the_product_pages_first_snippet_prints_a_url_that_answers_hello(daemon):
    run = run_example("web-demo.py")
    assert run.returncode == 0, run.stderr
    url, answer = run.stdout.splitlines()
    assert re.fullmatch(r"https://3000-[a-z0-9]{12}\.sail\.localhost(:\d+)?", url)
    assert answer == "hello"
