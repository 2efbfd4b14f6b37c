"""Verifiable preferences: what a user can ask of a reply's form, and a checker for each.

Each ``PreferenceType`` has several first-person phrasings, the parameters it can take and a checker
``check(response, **params) -> bool``. Types sharing a *slot* (case, length, start, end, line layout)
contradict each other and never share a profile. A stated preference is a record
``{"type", "params", "text"}``; ``follows(preference, response)`` re-checks it from that record alone.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mipo.core.errors import ConfigError, MipoError

Checker = Callable[..., bool]


@dataclass(frozen=True)
class PreferenceType:
    name: str
    phrasings: tuple[str, ...]  # first-person sentences, with {placeholders} filled from params
    check: Checker  # check(response, **params) -> followed?
    params: tuple[dict[str, Any], ...] = ({},)
    slots: frozenset[str] = frozenset()  # preferences sharing a slot contradict each other


def _letters(text: str) -> list[str]:
    return [c for c in text if c.isalpha()]


def _word_count(text: str) -> int:
    return len(text.split())


def _strip_end(text: str) -> str:
    """The text without trailing whitespace, quotes and markdown emphasis."""
    return text.rstrip().rstrip("\"'*_)]` ").rstrip()


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", text, re.IGNORECASE) is not None


def check_lowercase(text: str) -> bool:
    letters = _letters(text)
    return bool(letters) and not any(c.isupper() for c in letters)


def check_all_caps(text: str) -> bool:
    letters = _letters(text)
    return bool(letters) and not any(c.islower() for c in letters)


def check_max_words(text: str, n: int) -> bool:
    return _word_count(text) <= n


def check_min_words(text: str, n: int) -> bool:
    return _word_count(text) >= n


def check_max_sentences(text: str, n: int) -> bool:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if s.strip()]
    return len(sentences) <= n


def check_end_question(text: str) -> bool:
    return _strip_end(text).endswith("?")


def check_end_exclamation(text: str) -> bool:
    return _strip_end(text).endswith("!")


def check_sign_off(text: str, phrase: str) -> bool:
    last = text.strip().splitlines()[-1] if text.strip() else ""
    return _strip_end(last).rstrip(".!,").lower().endswith(phrase.lower())


def check_postscript(text: str) -> bool:
    return re.search(r"(?<![A-Za-z])p\.\s?s\.?(?![A-Za-z])|(?<![A-Za-z])ps:", text, re.IGNORECASE) is not None


def check_start_word(text: str, word: str) -> bool:
    first = re.match(r"[\W_]*([A-Za-z']+)", text)
    return first is not None and first.group(1).lower() == word.lower()


def check_title(text: str) -> bool:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return bool(lines) and re.match(r"#{1,6}\s+\S", lines[0].strip()) is not None


def check_quoted(text: str) -> bool:
    s = text.strip()
    return len(s) > 1 and s[0] in '"“' and s[-1] in '"”'


def check_keyword(text: str, word: str) -> bool:
    return _has_word(text, word)


def check_forbidden_word(text: str, word: str) -> bool:
    return not _has_word(text, word)


def check_name(text: str, name: str) -> bool:
    return _has_word(text, name)


def check_bullet_list(text: str) -> bool:
    bullets = [line for line in text.splitlines() if re.match(r"\s*(?:[-*•+]|\d+[.)])\s+\S", line)]
    return len(bullets) >= 2


def check_single_paragraph(text: str) -> bool:
    return "\n" not in text.strip()


def check_no_commas(text: str) -> bool:
    return "," not in text and "，" not in text


def check_no_digits(text: str) -> bool:
    return re.search(r"\d", text) is None


_EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\U0001f000-\U0001f2ff]")


def check_emoji(text: str) -> bool:
    return _EMOJI.search(text) is not None


def check_bold(text: str) -> bool:
    return re.search(r"\*\*[^*\n]+\*\*", text) is not None


def _slots(*names: str) -> frozenset[str]:
    return frozenset(names)


PREFERENCE_TYPES: dict[str, PreferenceType] = {
    p.name: p
    for p in [
        PreferenceType(
            "lowercase",
            (
                "Always answer in lowercase.",
                "I find capital letters shouty, so please write only in lowercase letters.",
                "Use no capital letters at all in your replies.",
            ),
            check_lowercase,
            slots=_slots("case"),
        ),
        PreferenceType(
            "all_caps",
            (
                "Write your whole answer in capital letters.",
                "I have poor eyesight, so answer in ALL CAPS.",
                "Please reply using only uppercase letters.",
            ),
            check_all_caps,
            slots=_slots("case"),
        ),
        PreferenceType(
            "max_words",
            (
                "I read on my phone, so keep answers under {n} words.",
                "Keep it short: no more than {n} words.",
                "I am busy; answer in {n} words or fewer.",
            ),
            check_max_words,
            params=({"n": 30}, {"n": 50}),
            slots=_slots("length"),
        ),
        PreferenceType(
            "min_words",
            (
                "I like thorough answers of at least {n} words.",
                "Please write at least {n} words; short replies frustrate me.",
                "Give me a detailed answer, {n} words or more.",
            ),
            check_min_words,
            params=({"n": 40}, {"n": 50}),
            slots=_slots("length"),
        ),
        PreferenceType(
            "max_sentences",
            (
                "Answer in at most {n} sentences.",
                "I only have time for {n} sentences, no more.",
                "Keep your reply to {n} sentences or fewer.",
            ),
            check_max_sentences,
            params=({"n": 2}, {"n": 3}),
            slots=_slots("length"),
        ),
        PreferenceType(
            "end_question",
            (
                "End your answer with a question for me.",
                "I like conversations, so always finish with a question back to me.",
                "Close every reply by asking me a question.",
            ),
            check_end_question,
            slots=_slots("end"),
        ),
        PreferenceType(
            "end_exclamation",
            (
                "End your answer with an exclamation mark!",
                "I like enthusiasm: finish your reply with an exclamation mark.",
                "Make the last character of your answer a '!'.",
            ),
            check_end_exclamation,
            slots=_slots("end"),
        ),
        PreferenceType(
            "sign_off",
            (
                "Always sign off with '{phrase}'.",
                "Finish your reply with the words '{phrase}'.",
                "End every answer with '{phrase}' on the last line.",
            ),
            check_sign_off,
            params=({"phrase": "Cheers"}, {"phrase": "Hope this helps"}, {"phrase": "Take care"}),
            slots=_slots("end"),
        ),
        PreferenceType(
            "postscript",
            (
                "Add a P.S. at the end of your answer.",
                "I love a postscript: end with a line starting 'P.S.'.",
                "Always include a P.S. after your main answer.",
            ),
            check_postscript,
            slots=_slots("end"),
        ),
        PreferenceType(
            "start_word",
            (
                "Start your answer with the word '{word}'.",
                "Begin every reply with '{word}'.",
                "The first word of your answer should be '{word}'.",
            ),
            check_start_word,
            params=({"word": "Sure"}, {"word": "Well"}, {"word": "Okay"}, {"word": "Hello"}),
            slots=_slots("start"),
        ),
        PreferenceType(
            "title",
            (
                "Start with a markdown title line, like '# My title'.",
                "Give your answer a title as a markdown heading (a line starting with '#').",
                "I organise notes in markdown: begin with a '# ' heading.",
            ),
            check_title,
            slots=_slots("start", "lines"),
        ),
        PreferenceType(
            "quoted",
            (
                "Wrap your entire answer in double quotation marks.",
                "Put your whole reply inside double quotes.",
                'I paste answers into code: enclose the full answer in "double quotes".',
            ),
            check_quoted,
            slots=_slots("start", "end"),
        ),
        PreferenceType(
            "keyword",
            (
                "Mention the word '{word}' somewhere in your answer.",
                "I collect words: include '{word}' in your reply.",
                "Please use the word '{word}' at least once.",
            ),
            check_keyword,
            params=({"word": "banana"}, {"word": "ocean"}, {"word": "robot"}, {"word": "garden"}),
        ),
        PreferenceType(
            "forbidden_word",
            (
                "Never use the word '{word}'.",
                "I dislike the word '{word}'; do not use it.",
                "Avoid the word '{word}' in your answer.",
            ),
            check_forbidden_word,
            params=({"word": "very"}, {"word": "really"}, {"word": "just"}),
        ),
        PreferenceType(
            "name",
            (
                "My name is {name}; address me by name.",
                "I'm {name}. Please use my name in your answer.",
                "Call me {name} when you reply.",
            ),
            check_name,
            params=({"name": "Alice"}, {"name": "Ravi"}, {"name": "Maria"}, {"name": "Tom"}),
        ),
        PreferenceType(
            "bullet_list",
            (
                "Format your answer as a bulleted list.",
                "I skim: give me bullet points, one idea per line.",
                "Answer as a list with a '-' at the start of each line.",
            ),
            check_bullet_list,
            slots=_slots("lines"),
        ),
        PreferenceType(
            "single_paragraph",
            (
                "Answer in a single paragraph with no line breaks.",
                "Keep everything in one paragraph, please.",
                "No line breaks: write one continuous paragraph.",
            ),
            check_single_paragraph,
            slots=_slots("lines"),
        ),
        PreferenceType(
            "no_commas",
            (
                "Don't use any commas.",
                "My screen reader stumbles on commas, so write without a single comma.",
                "Avoid commas entirely in your answer.",
            ),
            check_no_commas,
        ),
        PreferenceType(
            "no_digits",
            (
                "Spell out numbers in words; use no digits.",
                "Do not write any digits (0-9); write numbers as words.",
                "I prefer 'seven' to '7': no digits in your answer.",
            ),
            check_no_digits,
        ),
        PreferenceType(
            "emoji",
            (
                "Include at least one emoji in your answer.",
                "I love emojis, add some to your reply.",
                "Use an emoji somewhere in your answer.",
            ),
            check_emoji,
        ),
        PreferenceType(
            "bold",
            (
                "Put the key words in **bold**.",
                "Highlight the most important part with markdown bold (**like this**).",
                "Use **bold** text for the main point.",
            ),
            check_bold,
        ),
    ]
}


def follows(preference: dict[str, Any], response: str) -> bool:
    """Does ``response`` follow ``preference`` (``{"type", "params", "text"}``)? An empty reply follows none."""
    if not response.strip():
        return False
    kind = PREFERENCE_TYPES.get(preference["type"])
    if kind is None:
        raise MipoError(f"unknown preference type '{preference['type']}'")
    return bool(kind.check(response, **preference.get("params", {})))


def check_types(types: list[str] | None) -> list[str]:
    """``types`` (default: all), each a known preference type."""
    unknown = [t for t in types or [] if t not in PREFERENCE_TYPES]
    if unknown:
        raise ConfigError(
            f"unknown preference type(s) {', '.join(unknown)}: choose from {', '.join(PREFERENCE_TYPES)}"
        )
    return sorted(types or PREFERENCE_TYPES)


def draw_profile(rng: random.Random, types: list[str] | None = None) -> list[dict[str, Any]]:
    """1-3 non-contradictory preferences among ``types`` (default all), each ``{"type", "params", "text"}``."""
    size = rng.choice((1, 2, 3))
    names = check_types(types)
    rng.shuffle(names)
    profile, used = [], set()
    for name in names:
        kind = PREFERENCE_TYPES[name]
        if kind.slots & used:
            continue
        params = dict(rng.choice(kind.params))
        profile.append({"type": name, "params": params, "text": rng.choice(kind.phrasings).format(**params)})
        used |= kind.slots
        if len(profile) == size:
            break
    return profile


def context_text(profile: list[dict[str, Any]]) -> str:
    return "About me: " + " ".join(p["text"] for p in profile)
