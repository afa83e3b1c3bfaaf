"""Documentation questions built from documentation pages, with reference answers.

A page of the Python docs (plain text rendered from reST) documents an API as a signature
line at column 0 followed by an indented description::

    cache(user_function)

       Simple lightweight unbounded function cache.  Sometimes called
       "memoize".

Each such definition becomes one question ("What does `functools.cache(user_function)`
do?") whose reference answer is the description's opening prose: its first paragraph, and
the next one when the first is shorter than ``MIN_ANSWER_WORDS``, cut at a sentence end
near ``MAX_ANSWER_WORDS``. The distill stage asks the teacher the questions of the train
pages (its answers are the sequence-KD data); the bench asks those of the test pages, whose
reference answers no model trained on.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

SIGNATURE = re.compile(r"^(?:(class|exception|coroutine|awaitable) )?([A-Za-z_][\w.]*)\((.*)\)\s*$")
MIN_ANSWER_WORDS, MAX_ANSWER_WORDS = 12, 70
_MARKUP = re.compile(r"\*\*?([^*\n]+?)\*\*?|`+([^`\n]+?)`+")  # *arg*, **strong**, `literal`
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class DocQuestion:
    id: str
    source: str  # the page's path
    question: str
    answer: str  # the reference answer, from the page


def page_module(path: str, text: str) -> str:
    """The module a page documents: the title's first word in "name --- summary" titles
    (library pages), else the page's file stem up to a dash ("" for the C API)."""
    title = text.split("\n", 1)[0]
    if " --- " in title:
        return title.split(" --- ", 1)[0].strip().split()[0]
    if path.startswith("library/"):
        return path.rsplit("/", 1)[-1].removesuffix(".rst").split("-", 1)[0]
    return ""


def plain(text: str) -> str:
    """reST inline markup dropped, whitespace collapsed."""
    return " ".join(_MARKUP.sub(lambda m: m.group(1) or m.group(2), text).split())


def _paragraphs(lines: list[str], start: int) -> list[str]:
    """Prose paragraphs of the indented block opening at ``lines[start]`` (3 to 6 columns
    in; deeper lines are code or nested blocks and end a paragraph)."""
    paragraphs, current = [], []
    for line in lines[start:]:
        if not line.strip():
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent < 3:
            break
        if indent > 6 or line.strip().startswith((">>>", "...")):
            if current:
                paragraphs.append(" ".join(current))
                current = []
            break
        current.append(line.strip())
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def reference_answer(paragraphs: list[str]) -> str:
    """The opening prose, cut at the last sentence end within ``MAX_ANSWER_WORDS`` words."""
    text = ""
    for paragraph in paragraphs[:2]:
        if paragraph.endswith(":"):  # introduces an example or a list that is not kept
            break
        text = f"{text} {plain(paragraph)}".strip()
        if len(text.split()) >= MIN_ANSWER_WORDS:
            break
    kept = []
    for sentence in _SENTENCE_END.split(text):
        if kept and len(" ".join([*kept, sentence]).split()) > MAX_ANSWER_WORDS:
            break
        kept.append(sentence)
    return " ".join(kept)


def question_text(kind: str | None, name: str, arguments: str, module: str) -> str:
    qualified = name if not module or name.startswith(module + ".") else f"{module}.{name}"
    where = " in the Python C API" if not module and re.match(r"Py|_Py", name) else " in Python"
    signature = f"{qualified}({arguments})"
    if kind in ("class", "exception"):
        return f"What is the {kind} `{signature}`{where}?"
    return f"What does `{signature}` do{where}?"


def page_questions(path: str, text: str) -> list[DocQuestion]:
    """Every documented signature of one page with a usable description (at least
    ``MIN_ANSWER_WORDS / 2`` words of prose)."""
    lines, module, found = text.split("\n"), page_module(path, text), []
    for index, line in enumerate(lines[:-2]):
        match = SIGNATURE.match(line)
        if not match or lines[index + 1].strip() or not lines[index + 2].startswith("   "):
            continue
        answer = reference_answer(_paragraphs(lines, index + 2))
        if len(answer.split()) < MIN_ANSWER_WORDS // 2:
            continue
        kind, name, arguments = match.groups()
        question = question_text(kind, name, arguments.strip(), module)
        digest = hashlib.sha256(f"{path}\n{question}".encode()).hexdigest()[:10]
        found.append(DocQuestion(f"{path}#{name}:{digest}", path, question, answer))
    return found


def questions_from_pages(pages: list[dict], count: int, seed: int) -> list[DocQuestion]:
    """``count`` questions (0 = all) drawn evenly over ``pages`` (``{"path", "text"}`` rows),
    a seeded choice that does not change when ``count`` grows (the first ``n`` of a larger
    draw are the smaller draw)."""
    import random

    every = [q for page in pages for q in page_questions(page.get("path", ""), page["text"])]
    unique = list({q.question: q for q in every}.values())  # a name documented twice is asked once
    random.Random(seed).shuffle(unique)
    return unique[:count] if count else unique
