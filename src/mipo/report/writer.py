"""The report stage: ``report.md`` and a self-contained ``report.html`` (plots embedded) from a run folder.

The run folder is read once (``RunFolder``); each section of the report (``SECTIONS``: headline, results,
the context effect, preference types, the PMI objective, training, examples, what was run) is a function
of it that returns blocks (headings, paragraphs, tables, figures). The blocks are rendered twice: once as
Markdown with the figures beside it as PNG files, once as one HTML file with the PNGs inlined.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mipo.core.config import option, require
from mipo.core.files import atomic_write_text
from mipo.report.folder import read_run_folder
from mipo.report.render import Block, render_html, render_markdown
from mipo.report.sections import SECTIONS

log = logging.getLogger(__name__)


@dataclass
class ReportConfig:
    """The ``report:`` mapping of a ``mipo run`` config."""

    examples: int = option(5, "how many prompts to show with both models' replies side by side")

    def __post_init__(self) -> None:
        require([] if self.examples >= 0 else [f"examples must be 0 or more, got {self.examples}"])


def build_report(run_dir: str | Path, *, title: str = "", examples: int = 5) -> Path:
    """Write ``RUN/report/report.md``, its figures and ``RUN/report/report.html``; return the Markdown path."""
    run = read_run_folder(run_dir, examples=examples)
    run.figures.mkdir(parents=True, exist_ok=True)
    title = title or f"MIPO run: {run.path.name}"
    blocks = [Block("h1", title)]
    for section in SECTIONS:
        blocks.extend(section(run))
    md_path = atomic_write_text(run.figures / "report.md", render_markdown(blocks, run.figures))
    atomic_write_text(run.figures / "report.html", render_html(blocks, title))
    log.info("wrote %s and %s", md_path, run.figures / "report.html")
    return md_path
