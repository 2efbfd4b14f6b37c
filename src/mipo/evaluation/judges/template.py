"""Judge prompts: a built-in template by name, or the user's own file with placeholders.

A template is the judge's whole user turn. Placeholders: ``{question}``, ``{context}`` (the user's stated
context; a fixed sentence when an item has none), ``{answer_a}``, ``{answer_b}``. ``{question}``,
``{answer_a}`` and ``{answer_b}`` are required; ``{context}`` is optional (a general helpfulness template
leaves it out). Other braces are left as they are, so a template may show JSON.

The built-in templates ask for the verdict alone ("[[A]]", "[[B]]" or "[[C]]"), so a judge can read it
from the log-probabilities of the letter after a forced ``[[`` (``verdict_first``). A user's template may
ask for an explanation first (as FastChat's MT-Bench prompt does); its verdict is then parsed from the text
unless the judge is told ``verdict="logprobs"``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from mipo.core.errors import ConfigError, InputError

PLACEHOLDERS = ("question", "context", "answer_a", "answer_b")
REQUIRED_PLACEHOLDERS = ("question", "answer_a", "answer_b")
BUILTIN_TEMPLATES = ("personalization", "helpfulness")
NO_CONTEXT = "(The user said nothing about themselves.)"
TEMPLATE_FOLDER = Path(__file__).parent / "templates"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Template:
    name: str  # a built-in name, or the file's path
    text: str
    verdict_first: bool  # the template asks for the verdict alone, so log-probs can be read after "[["

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def fill(self, question: str, context: str | None, answer_a: str, answer_b: str) -> str:
        values = {
            "question": question,
            "context": context.strip() if context and context.strip() else NO_CONTEXT,
            "answer_a": answer_a,
            "answer_b": answer_b,
        }
        # One pass over the text: a reply containing "{answer_b}" is not expanded again.
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), self.text)


def load_template(template: str | Path | Template) -> Template:
    """A built-in template by name (``personalization``, ``helpfulness``) or a text file with placeholders."""
    if isinstance(template, Template):
        return template
    name = str(template)
    if name in BUILTIN_TEMPLATES:
        text = (TEMPLATE_FOLDER / f"{name}.txt").read_text(encoding="utf-8")
        return Template(name, text, verdict_first=True)
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"judge template {name!r}: not a built-in template ({', '.join(BUILTIN_TEMPLATES)}) "
            "nor an existing file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read the judge template: {e}") from None
    found = set(_PLACEHOLDER.findall(text))
    missing = [p for p in REQUIRED_PLACEHOLDERS if p not in found]
    if missing:
        raise InputError(
            path,
            f"judge template lacks the placeholder(s) {', '.join('{' + p + '}' for p in missing)} "
            f"(placeholders: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})",
        )
    unknown = sorted(p for p in found if p not in PLACEHOLDERS and p.islower())
    if unknown:
        raise InputError(
            path,
            f"judge template has unknown placeholder(s) {', '.join('{' + p + '}' for p in unknown)} "
            f"(placeholders: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})",
        )
    return Template(str(path), text, verdict_first=False)
