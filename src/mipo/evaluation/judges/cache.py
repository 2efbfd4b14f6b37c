"""Verdicts cached on disk, so a rerun, a resumed run or a second model costs only the new pairs.

One JSONL file per (judge, template) under ``$MIPO_CACHE/judge/``: the file name is a digest of the judge's
identity (its weights or endpoint and model, how it reads verdicts) and the template text's sha256. Each
line holds one verdict, keyed by the question, the context and both replies *in the order shown*. Lines
are appended and flushed one verdict at a time: a killed run keeps every verdict it finished, and a torn
last line is skipped on reading.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from mipo.core.fingerprint import digest
from mipo.evaluation.judges.base import Judge, JudgeRequest, Judgment
from mipo.evaluation.judges.template import Template

log = logging.getLogger(__name__)


def request_key(request: JudgeRequest) -> str:
    return digest(list(request), length=32)


class VerdictCache:
    """The cached verdicts of one judge with one template: ``get``/``put`` by request."""

    def __init__(self, folder: str | Path, judge: Judge, template: Template):
        self.folder = Path(folder)
        self.key = digest({"judge": judge.identity(), "template_sha256": template.sha256})
        self.path = self.folder / f"{self.key}.jsonl"
        self._lock = threading.Lock()
        self._verdicts: dict[str, Judgment] = {}
        self._load(judge, template)

    def _load(self, judge: Judge, template: Template) -> None:
        if not self.path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            # The first line says what the file holds, for a person reading the cache folder.
            header = {
                "judge": judge.identity(),
                "template": template.name,
                "template_sha256": template.sha256,
            }
            self.path.write_text(json.dumps({"header": header}, default=str) + "\n", encoding="utf-8")
            return
        text = self.path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            with self.path.open("a", encoding="utf-8") as f:
                f.write("\n")  # new verdicts start on a fresh line after a torn write
        torn = 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                torn += 1  # the line a killed run was writing
                continue
            if "key" in row:
                self._verdicts[row["key"]] = Judgment.from_json(row)
        if torn:
            log.warning("%s: skipped %d unreadable line(s) (an interrupted write)", self.path, torn)

    def get(self, request: JudgeRequest) -> Judgment | None:
        return self._verdicts.get(request_key(request))

    def put(self, request: JudgeRequest, judgment: Judgment) -> None:
        key = request_key(request)
        with self._lock:
            self._verdicts[key] = judgment
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, **judgment.to_json()}) + "\n")
                f.flush()

    def __len__(self) -> int:
        return len(self._verdicts)


def judge_cached(
    judge: Judge, template: Template, requests: list[JudgeRequest], cache: VerdictCache | None
) -> tuple[list[Judgment], int]:
    """``(judgments in input order, how many the judge was asked for)``: cached verdicts are reused, the
    others asked once each (duplicates share one call) and cached as they arrive."""
    out: list[Judgment | None] = [cache.get(r) if cache else None for r in requests]
    todo: dict[JudgeRequest, list[int]] = {}
    for index, (request, judgment) in enumerate(zip(requests, out)):
        if judgment is None:
            todo.setdefault(request, []).append(index)
    unique = list(todo)
    for position, judgment in judge.stream(unique, template):
        if cache is not None:
            cache.put(unique[position], judgment)
        for index in todo[unique[position]]:
            out[index] = judgment
    missing = [i for i, j in enumerate(out) if j is None]
    if missing:
        raise RuntimeError(f"judge {judge.name!r} returned no verdict for {len(missing)} request(s)")
    return out, len(unique)  # type: ignore[return-value]
