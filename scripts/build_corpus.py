"""Build the docs-assistant corpus from the Python 3.11 documentation sources.

Input: the reST sources that Debian's ``python3.11-doc`` package installs under
``/usr/share/doc/python3.11/html/_sources`` (``**/*.rst.txt``), or the ``.deb`` itself
(``apt-get download python3.11-doc``; unpacked with ``dpkg-deb``). Output, committed
under ``edgedistill/demo/data/pydocs/``:

- ``train.jsonl.gz`` / ``validation.jsonl.gz`` / ``test.jsonl.gz``: one cleaned document
  per line, ``{"path": "library/json.rst", "text": ...}``. The split is by whole document,
  decided by a hash of the document's path, so it is stable when documents are added and
  no test document is ever seen by teacher or student training.
- ``qa.jsonl``: question -> reference answer pairs from the FAQ pages and the glossary,
  with ``prompt`` = the exact text that precedes the answer in the corpus.
- ``PROVENANCE.json``: source package and version, licence, counts, sha256 of every file.

Cleaning keeps prose and code samples and drops markup: roles (``:func:`len``` -> ``len``),
link targets, labels, comments, index/toctree/module metadata, directive options and
section adornments. Admonitions and version notes become plain sentences ("Note: ...",
"New in version 3.2."); signatures of described objects stay as a line of text.

Run: ``python -m scripts.build_corpus [--source DIR_OR_DEB] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from edgedistill import demo

DEFAULT_SOURCE = Path("/usr/share/doc/python3.11/html/_sources")
DEMO = Path(demo.__file__).parent  # what these tools write ships in the package
OUTPUT = DEMO / "data" / "pydocs"
SPLITS = ("train", "validation", "test")
HELD_OUT_PERCENT = {"validation": 4, "test": 4}  # share of documents, by path hash
# The QA set asks about what the assistant was trained on (FAQ and glossary are train
# documents): it measures recall of the documentation, the docs-assistant's job. Held-out
# generalization is what the test split measures.
QA_SOURCES = ("faq/", "glossary.rst")
MIN_DOCUMENT_CHARS = 200
SKIPPED_DOCUMENTS = ("contents.rst", "copyright.rst", "license.rst", "bugs.rst", "about.rst")
LICENCE = (
    "Python Software Foundation License Version 2 (PSF-2.0); the Python documentation is "
    "Copyright (c) 2001-2023 Python Software Foundation. See "
    "https://docs.python.org/3.11/license.html"
)

# Directives whose body (and argument) carry no text for a reader.
_DROP = {
    "index", "toctree", "module", "moduleauthor", "sectionauthor", "highlight", "contents",
    "testsetup", "testcleanup", "include", "literalinclude", "image", "figure", "raw",
    "audit-event", "tabularcolumns", "currentmodule", "program", "default-domain",
    "productionlist", "grammar-snippet", "only", "csv-table", "limited-api-list",
    "c:namespace", "c:namespace-push", "c:namespace-pop", "role",
}
# Directives whose body is plain content at one indent less (lists, glossary entries).
_CONTENT = {"glossary", "list-table", "hlist", "container", "compound"}
# Directives whose body is code: kept verbatim, indented as a literal block.
_CODE = {"code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "parsed-literal"}
# Admonitions: body kept, introduced by a label.
_LABELLED = {
    "note": "Note:", "warning": "Warning:", "caution": "Caution:", "important": "Important:",
    "tip": "Tip:", "hint": "Hint:", "danger": "Danger:", "attention": "Attention:",
    "seealso": "See also:", "impl-detail": "CPython implementation detail:", "admonition": "",
    "availability": "Availability:", "topic": "", "sidebar": "", "rubric": "", "centered": "",
}
_VERSION_NOTES = {
    "versionadded": "New in version {}.", "versionchanged": "Changed in version {}:",
    "deprecated": "Deprecated since version {}:", "deprecated-removed": "Deprecated since version {}:",
}

_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")
_EXPLICIT = re.compile(r"^(\s*)\.\.(\s|$)")  # comments, labels, footnotes, link targets
_OPTION = re.compile(r"^\s*:[\w -]+:(\s|$)")
_FIELD = re.compile(r"^:[A-Za-z][\w -]*:(\s|$)")
FRONT_MATTER_LINES = 40
_ADORNMENT = re.compile(r"^\s*([=\-~^\"'`#*+.:_<>])\1{2,}\s*$")
_ROLE = re.compile(r":(?:[\w-]+:)?([\w-]+):`((?:[^`\\]|\\.)*)`")
_GRID_BORDER = re.compile(r"^\s*\+[-=+]+\+\s*$")
_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")
_NAMED_REF = re.compile(r"`([^`]+)`__?(?=\W|$)")
_FOOTNOTE_REF = re.compile(r"\s*\[(?:#[\w-]*|\d+|\*)\]_")
_SUBSTITUTIONS = {"|version|": "3.11", "|release|": "3.11", "|today|": "", "|tm|": ""}


# label -> section title, from every document (filled by build()); resolves ``:ref:`label```.
LABEL_TITLES: dict[str, str] = {}
_LABEL_BEFORE_TITLE = re.compile(
    r"^\.\. _([^:\n]+):[ \t]*\n(?:[ \t]*\n|\.\. _[^\n]*\n)*"  # the label, blank lines, stacked labels
    r"(?:([=\-~^\"'`#*+])\2{2,}\n)?([^\n]+)\n([=\-~^\"'`#*+])\4{2,}[ \t]*$", re.M)


def collect_label_titles(documents: dict[str, str]) -> dict[str, str]:
    """``.. _label:`` followed by a section title -> that title, over all documents."""
    titles = {}
    for text in documents.values():
        for match in _LABEL_BEFORE_TITLE.finditer(text):
            titles[match.group(1).strip().lower()] = clean_inline(match.group(3).strip())
    return titles


def _role_text(match: re.Match) -> str:
    role, body = match.group(1), " ".join(match.group(2).replace("\\", "").split())
    if role in ("rfc", "pep"):
        return f"{role.upper()} {body}"
    if role in ("ref", "doc") and "<" not in body:
        label = body.lstrip("!~")
        return LABEL_TITLES.get(label.lower(), label.rsplit("/", 1)[-1].replace("-", " ").replace("_", " "))
    title = re.match(r"^(.*?)\s*<[^<>]*>$", body, re.S)
    if title and title.group(1):
        return title.group(1)
    body = body.lstrip("!")
    if body.startswith("~"):
        body = body[1:].split(".")[-1]
    return body


def clean_inline(line: str) -> str:
    """Markup of one line -> plain text (code stays in backticks)."""
    line = line.replace("\\ ", "")  # reST's escaped space joins markup to a word: "non-\\ `NULL`"
    line = _ROLE.sub(_role_text, line)
    line = _LINK.sub(lambda m: m.group(1), line)
    line = _FOOTNOTE_REF.sub("", line)
    line = re.sub(r"``(.+?)``", r"`\1`", line)
    line = _NAMED_REF.sub(lambda m: m.group(1), line)
    line = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"\1", line)
    for key, value in _SUBSTITUTIONS.items():
        line = line.replace(key, value)
    return line


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the block that starts at ``start``: blank lines or lines indented deeper."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent_of(lines[end]) > indent):
        end += 1
    while end > start and not lines[end - 1].strip():  # trailing blanks belong to the parent
        end -= 1
    return end


def _body(lines: list[str]) -> list[str]:
    """A directive's body without its leading option lines, dedented."""
    index = 0
    while index < len(lines) and lines[index].strip() and _OPTION.match(lines[index]):
        index += 1
    return textwrap.dedent("\n".join(lines[index:])).split("\n")


def clean_lines(lines: list[str], in_code: bool = False) -> list[str]:
    """Clean a list of reST lines (recursively for directive bodies)."""
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _DIRECTIVE.match(line)
        if directive:
            indent, name, argument = len(directive.group(1)), directive.group(2), directive.group(3).strip()
            end = _block_end(lines, index + 1, indent)
            body = _body(lines[index + 1:end])
            pad = " " * indent
            short = name.split(":")[-1]
            if name in _DROP or short in _DROP:
                pass
            elif short in _CODE:
                out.append("")
                out.extend(pad + "    " + text if text.strip() else "" for text in body)
                out.append("")
            elif short in _VERSION_NOTES:
                version, _, rest = argument.partition(" ")
                text = " ".join(part for part in [_VERSION_NOTES[short].format(version), clean_inline(rest)] if part)
                out.append(pad + text)
                out.extend(pad + text if text else "" for text in clean_lines(body))
            elif short in _LABELLED:
                label = " ".join(part for part in [_LABELLED[short], clean_inline(argument)] if part)
                if label:
                    out.append(pad + label)
                out.extend(pad + text if text else "" for text in clean_lines(body))
            elif short in _CONTENT:
                out.extend(pad + text if text else "" for text in clean_lines(body))
            else:  # function, class, method, attribute, data, exception, cmdoption, envvar, opcode, ...
                if argument:
                    out.append(pad + clean_inline(argument))
                out.extend(pad + "   " + text if text else "" for text in clean_lines(body))
            index = end
            continue
        explicit = _EXPLICIT.match(line)
        if explicit:  # comment, label, footnote or link target: skip it with its body
            index = _block_end(lines, index + 1, len(explicit.group(1)))
            continue
        if _ADORNMENT.match(line) or _GRID_BORDER.match(line):
            index += 1
            continue
        stripped = line.rstrip()
        if stripped.strip() == "::":
            index += 1
            continue
        if stripped.endswith("::"):
            stripped = stripped[:-1]  # "Example::" introduces a literal block -> "Example:"
            out.append(clean_inline(stripped))
            end = _block_end(lines, index + 1, _indent_of(line))
            out.extend(text.rstrip() for text in lines[index + 1:end])  # literal block, verbatim
            index = end
            continue
        out.append(clean_inline(stripped))
        index += 1
    return out


def clean_document(source: str) -> str:
    """One reST document -> cleaned text (prose, code samples, titles)."""
    lines = source.replace("\t", "        ").split("\n")
    # Front matter (:tocdepth:, :Author:, :Release: ...) lives in the first lines of a page.
    lines = [line for number, line in enumerate(lines) if number >= FRONT_MATTER_LINES or not _FIELD.match(line)]
    text = "\n".join(clean_lines(lines))
    text = _ROLE.sub(_role_text, text)  # roles that wrap across lines
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


def split_of(path: str) -> str:
    """train / validation / test for a document path: a stable hash decides."""
    if path.startswith(QA_SOURCES):
        return "train"
    bucket = int(hashlib.sha256(path.encode()).hexdigest(), 16) % 100
    if bucket < HELD_OUT_PERCENT["test"]:
        return "test"
    if bucket < HELD_OUT_PERCENT["test"] + HELD_OUT_PERCENT["validation"]:
        return "validation"
    return "train"


def faq_pairs(path: str, source: str) -> list[dict]:
    """(question, answer) from FAQ sections: a title ending in '?' and its first paragraphs."""
    lines = source.split("\n")
    pairs = []
    for index in range(len(lines) - 1):
        title, underline = lines[index].strip(), lines[index + 1].strip()
        if (not title.endswith("?") or lines[index].startswith((" ", "\t")) or not _ADORNMENT.match(underline)
                or len(underline) < len(title) - 2):  # indented titles sit inside comments
            continue
        end = index + 2
        while end < len(lines) and not (
            end + 1 < len(lines) and lines[end].strip() and _ADORNMENT.match(lines[end + 1]) and not lines[end].startswith(" ")
        ):
            end += 1
        answer = clean_document("\n".join(lines[index + 2:end]))
        answer = _first_paragraphs(answer)
        question = clean_inline(title)
        if answer:
            pairs.append({"source": path, "question": question, "prompt": question + "\n\n", "answer": answer})
    return pairs


def glossary_pairs(path: str, source: str) -> list[dict]:
    """(term, definition) pairs from the glossary, prompt = the term line as in the corpus."""
    text = clean_document(source)
    pairs = []
    for match in re.finditer(r"^(\S[^\n]*)\n((?:   [^\n]*\n|\n(?=   ))+)", text, re.M):
        term = match.group(1).strip()
        definition = _first_paragraphs(textwrap.dedent(match.group(2)))
        if definition and term != "Glossary":
            question = f"What is {term.strip('`')}?"
            indented = "\n".join("   " + line if line else "" for line in definition.split("\n"))
            pairs.append({"source": path, "question": question, "prompt": term + "\n", "answer": indented})
    return pairs


def _first_paragraphs(text: str, max_chars: int = 400) -> str:
    """Leading paragraphs of ``text`` up to about ``max_chars`` (at least one)."""
    kept = []
    for paragraph in text.strip().split("\n\n"):
        if kept and sum(len(p) for p in kept) + len(paragraph) > max_chars:
            break
        kept.append(paragraph.strip("\n"))
    return "\n\n".join(kept).strip()


def read_sources(source: Path) -> tuple[dict[str, str], str]:
    """{document path (without .txt): reST text} and a provenance string for ``source``."""
    if source.suffix == ".deb":
        work = Path(tempfile.mkdtemp(prefix="pydocs-"))
        subprocess.run(["dpkg-deb", "-x", str(source), str(work)], check=True)
        provenance = f"Debian package {source.name}"
        source = work / "usr/share/doc/python3.11/html/_sources"
    else:
        provenance = f"{source} (Debian package python3.11-doc)"
    if not source.is_dir():
        raise SystemExit(f"no documentation sources at {source}; apt-get install python3.11-doc or pass --source FILE.deb")
    documents = {}
    for file in sorted(source.rglob("*.rst.txt")):
        rel = file.relative_to(source).as_posix()[: -len(".txt")]
        if rel in SKIPPED_DOCUMENTS or rel.startswith("includes/"):
            continue
        documents[rel] = file.read_text(encoding="utf-8")
    return documents, provenance


def _write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    # mtime=0 and a fixed filename keep the compressed bytes reproducible.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


def build(source: Path, out: Path) -> dict:
    documents, provenance = read_sources(source)
    LABEL_TITLES.clear()
    LABEL_TITLES.update(collect_label_titles(documents))
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    qa: list[dict] = []
    for path, text in documents.items():
        cleaned = clean_document(text)
        pairs = faq_pairs(path, text) if path.startswith("faq/") else glossary_pairs(path, text) if path == "glossary.rst" else []
        # Keep a pair only if its text is exactly what the models read in the corpus.
        qa.extend(pair for pair in pairs if pair["prompt"] + pair["answer"] in cleaned)
        if len(cleaned) >= MIN_DOCUMENT_CHARS:  # index pages clean to a bare title
            splits[split_of(path)].append({"path": path, "text": cleaned})
    out.mkdir(parents=True, exist_ok=True)
    record = {"source": provenance, "licence": LICENCE, "split_rule": "sha256(path) % 100: <4 test, <8 validation, "
              "else train; faq/ and glossary are train", "splits": {}, "files": {}}
    for name, rows in splits.items():
        _write_jsonl_gz(out / f"{name}.jsonl.gz", rows)
        record["splits"][name] = {"documents": len(rows), "characters": sum(len(r["text"]) for r in rows)}
    with open(out / "qa.jsonl", "w", encoding="utf-8") as handle:
        for row in qa:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    record["qa_pairs"] = len(qa)
    for file in sorted(out.iterdir()):
        if file.name != "PROVENANCE.json":
            record["files"][file.name] = hashlib.sha256(file.read_bytes()).hexdigest()
    (out / "PROVENANCE.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="_sources folder or python3.11-doc .deb")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    record = build(args.source, args.out)
    print(json.dumps({k: record[k] for k in ("splits", "qa_pairs")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
