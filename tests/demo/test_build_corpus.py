"""The reST cleaner and the corpus builder, on small documents written here."""

from __future__ import annotations

import gzip
import json

from scripts import build_corpus
from scripts.build_corpus import clean_document, clean_inline

PAGE = """\
:mod:`json` --- JSON encoder
============================

.. module:: json
   :synopsis: Encode and decode the JSON format.

.. index:: single: JSON

**Source code:** :source:`Lib/json/__init__.py`

Read :rfc:`7159` and :ref:`the tutorial <tut-json>`, see :func:`~json.dumps` and
`the spec <https://json.org>`_ [#errata]_. Use ``json.loads`` on a :term:`bytes-like
object`.

.. note::
   Keep it short.

.. versionadded:: 3.2 The *indent* argument.

.. function:: dumps(obj, *, indent=None)

   Serialize *obj*.

   .. versionchanged:: 3.4
      Use ``,`` as default.

Example::

    >>> json.dumps([1, 2])
    '[1, 2]'

.. code-block:: python

   print("hi")

.. testsetup::

   import secret_setup

.. This is a comment that
   spans two lines.

.. _label-target:

.. [#errata] Footnote text.
"""


def test_clean_document_keeps_prose_and_code_drops_markup():
    text = clean_document(PAGE)
    assert text.startswith("json --- JSON encoder\n")
    assert "=====" not in text and ".. " not in text and ":synopsis:" not in text
    assert "Source code: Lib/json/__init__.py" in text
    assert "Read RFC 7159 and the tutorial, see dumps and\nthe spec. Use `json.loads` on a bytes-like object." in text
    assert "Note:\nKeep it short." in text
    assert "New in version 3.2. The *indent* argument." in text
    assert "dumps(obj, *, indent=None)\n\n   Serialize *obj*." in text
    assert "   Changed in version 3.4:\n   Use `,` as default." in text
    assert "Example:\n\n    >>> json.dumps([1, 2])\n    '[1, 2]'" in text
    assert '    print("hi")' in text
    for dropped in ("secret_setup", "comment", "label-target", "Footnote text", "single: JSON"):
        assert dropped not in text


def test_clean_inline_roles():
    assert clean_inline(":class:`!NoLink` and :meth:`~a.b.c` and :pep:`8`") == "NoLink and c and PEP 8"
    assert clean_inline("`Python <https://python.org>`__ and ``x = 1``") == "Python and `x = 1`"


def _write_sources(root):
    pages = {
        "library/json.rst.txt": PAGE,
        "faq/general.rst.txt": (
            "General FAQ\n===========\n\nWhat is Python?\n---------------\n\n"
            "Python is an interpreted, interactive, object-oriented programming language.\n\n"
            "Is it free?\n-----------\n\nYes, see :ref:`the licence <license>`.\n\n"
            "Why is it called Python?\n------------------------\n\nAfter a comedy show; the name stuck and "
            "the documentation still makes jokes about spam and eggs.\n"
        ),
        "glossary.rst.txt": (
            "Glossary\n========\n\n.. glossary::\n\n   argument\n      A value passed to a :term:`function`\n"
            "      when calling it.\n\n   bytecode\n      Python source is compiled into bytecode, cached in .pyc files\n"
            "      and run by the virtual machine of the interpreter.\n\n"
            "   decorator\n      A function returning another function, applied with the @wrapper syntax.\n"
        ),
        "contents.rst.txt": "Contents\n========\n\n.. toctree::\n\n   whatsnew\n",
    }
    for index in range(30):
        pages[f"library/mod{index}.rst.txt"] = f"Module {index}\n========\n\n" + f"Text of module {index}. " * 20
    for name, text in pages.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def test_build_splits_by_document_and_extracts_qa(tmp_path, monkeypatch):
    monkeypatch.setitem(build_corpus.HELD_OUT_PERCENT, "test", 25)  # a third of 30 pages held out, split
    monkeypatch.setitem(build_corpus.HELD_OUT_PERCENT, "validation", 10)
    _write_sources(tmp_path / "src")
    record = build_corpus.build(tmp_path / "src", tmp_path / "out")
    paths = {}
    for split in build_corpus.SPLITS:
        with gzip.open(tmp_path / "out" / f"{split}.jsonl.gz", "rt", encoding="utf-8") as handle:
            paths[split] = [json.loads(line)["path"] for line in handle]
    assert sum(map(len, paths.values())) == 33  # contents.rst is skipped
    assert all(paths[split] for split in build_corpus.SPLITS), paths
    assert not set(paths["train"]) & set(paths["test"]) and not set(paths["train"]) & set(paths["validation"])
    assert not set(paths["validation"]) & set(paths["test"])
    assert {"faq/general.rst", "glossary.rst"} <= set(paths["train"])
    qa = [json.loads(line) for line in (tmp_path / "out" / "qa.jsonl").read_text(encoding="utf-8").splitlines()]
    by_question = {row["question"]: row for row in qa}
    assert by_question["What is Python?"]["answer"].startswith("Python is an interpreted")
    assert by_question["Is it free?"]["answer"] == "Yes, see the licence."
    assert by_question["What is argument?"]["prompt"] == "argument\n"
    assert by_question["What is argument?"]["answer"] == "   A value passed to a function\n   when calling it."
    assert record["qa_pairs"] == 6
    assert set(record["files"]) == {"train.jsonl.gz", "validation.jsonl.gz", "test.jsonl.gz", "qa.jsonl"}
    again = build_corpus.build(tmp_path / "src", tmp_path / "again")
    assert again["files"] == record["files"]  # byte-reproducible output
