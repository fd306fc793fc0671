import gzip
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from sutra_testing import run_sutra
from sutra.data.corpora import html_to_text, module_docstrings, r_lazyload_vectors, strip_gutenberg, wordnet_glosses

SPHINX_PAGE = """<!DOCTYPE html><html><head><title>9. Classes &#8212; Python 3.11 documentation</title>
<script>var DOCUMENTATION_OPTIONS = {};</script><style>body {}</style></head><body>
<div class="related" role="navigation"><ul><li><a href="index.html">index</a></li></ul></div>
<div class="document"><div class="body" role="main">
<section id="classes"><h1>9. Classes<a class="headerlink" href="#classes" title="Permalink">¶</a></h1>
<p>Classes provide a means of bundling   data and
functionality together.</p>
<div class="highlight-python3"><pre><span class="k">class</span> <span class="nc">Dog</span>:
    kind = <span class="s1">'canine'</span>
</pre></div><ul><li><p>one</p></li><li><p>two<br>lines</p></li></ul>
</section></div></div>
<div class="sphinxsidebar" role="navigation"><h3>Table of Contents</h3></div>
<div class="footer">&copy; Copyright 2001-2023</div></body></html>"""

DOCBOOK_PAGE = """<html><head><title>2.5. Querying a Table</title></head><body id="docContent">
<div class="navheader"><table><tr><th>2.5. Querying a Table</th></tr><tr><td><a href="x.html">Prev</a></td></tr></table></div>
<div class="sect1"><div class="titlepage"><h2 class="title">2.5. Querying a Table</h2></div>
<p>To retrieve data from a table, the table is <em class="firstterm">queried</em>.</p>
<pre class="programlisting">SELECT * FROM weather;</pre></div>
<div class="navfooter"><table><tr><td>Home</td></tr></table></div></body></html>"""


def test_html_pages_keep_main_text_and_drop_navigation():
    text = html_to_text(SPHINX_PAGE)
    assert text.startswith("9. Classes\n")
    assert "Classes provide a means of bundling data and functionality together." in text
    assert "class Dog:\n    kind = 'canine'" in text  # <pre> keeps its layout
    assert "two\nlines" in text
    for dropped in ("¶", "DOCUMENTATION_OPTIONS", "index", "Table of Contents", "Copyright", "body {}"):
        assert dropped not in text
    docbook = html_to_text(DOCBOOK_PAGE)
    assert docbook == "2.5. Querying a Table\n\nTo retrieve data from a table, the table is queried.\n\nSELECT * FROM weather;"


def test_wordnet_glosses_from_data_file_lines():
    lines = [
        "  1 This software and database is being provided to you, the LICENSEE, by  \n",
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04424418 n 0000 | that which is perceived or known or inferred to have its own distinct existence (living or nonliving)  \n",
        "00002137 03 n 02 abstraction 0 abstract_entity 0 010 @ 00001740 n 0000 | a general concept formed by extracting common features from specific examples  \n",
    ]
    assert list(wordnet_glosses(lines, "noun")) == [
        "entity (noun): that which is perceived or known or inferred to have its own distinct existence (living or nonliving)",
        "abstraction (noun): a general concept formed by extracting common features from specific examples Synonyms: abstract entity.",
    ]


def test_gutenberg_header_and_footer_are_removed():
    text = ("\ufeffThe Project Gutenberg EBook of Moby Dick\r\n\r\n*** START OF THIS PROJECT GUTENBERG EBOOK MOBY DICK ***\r\n\r\n"
            "Call me Ishmael.\r\n\r\nEnd of Project Gutenberg's Moby Dick\r\nLicense text")
    assert strip_gutenberg(text) == "Call me Ishmael."


def test_r_lazyload_database_is_read_without_r(tmp_path):
    import rdata

    def serialize(obj) -> bytes:
        return rdata.unparser.unparse_data(rdata.conversion.convert_python_to_r_data(obj))

    books = {"emma": ["EMMA", "", "By Jane Austen"], "persuasion": ["Persuasion", "Chapter 1"]}
    database, variables = b"", {}
    for name, lines in books.items():
        payload = serialize(np.array(lines))
        entry = len(payload).to_bytes(4, "big") + zlib.compress(payload)
        variables[name] = np.array([len(database), len(entry)], dtype=np.int32)
        database += entry
    (tmp_path / "Rdata.rdb").write_bytes(database)
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(serialize({"variables": variables, "references": {}, "compressed": True})))
    assert r_lazyload_vectors(tmp_path) == books


def test_module_docstrings_collects_long_docstrings(tmp_path):
    long = "Explains the idea in detail. " * 10
    source = tmp_path / "m.py"
    source.write_text(f'"""{long}"""\n\nclass A:\n    """{long}"""\n    def f(self):\n        """{long}"""\n\ndef short():\n    """Too short."""\n')
    text = module_docstrings(source, "pkg.m")
    assert text.startswith("Module pkg.m\n\n") and "pkg.m.A (class)" in text and "pkg.m.A.f (function)" in text
    assert "Too short" not in text
    (tmp_path / "bad.py").write_text("def broken(:\n")
    assert module_docstrings(tmp_path / "bad.py", "bad") is None


@pytest.mark.slow
def test_stdlib_docs_asset_prepares_to_300k_tokens(tmp_path, tokenizer):
    env = {"SUTRA_HOME": str(tmp_path / "home")}
    fetched = run_sutra("assets", "fetch", "stdlib-docs", env=env)
    assert fetched.returncode == 0, fetched.stderr
    corpus = Path(fetched.stdout.strip()) / "stdlib-docs.jsonl"
    first = json.loads(corpus.open().readline())
    assert set(first) == {"text", "source", "title", "license"}
    prepared = run_sutra("data", "prepare", "stdlib-docs", "--out", str(tmp_path / "out"), "--tokenizer", str(tokenizer.directory), env=env)
    assert prepared.returncode == 0, prepared.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["tokens"]["train"] + stats["tokens"]["val"] >= 300_000 and stats["dropped_total"] == 0


def test_debian_docs_without_apt_is_a_clear_error(tmp_path):
    result = run_sutra("assets", "fetch", "debian-docs", env={"SUTRA_HOME": str(tmp_path), "PATH": str(tmp_path)})
    assert result.returncode == 2 and "debian-docs needs apt-get" in result.stderr and "Traceback" not in result.stderr


def test_html_pages_skip_symlinked_copies_and_excluded_pages(tmp_path):
    from sutra.data.corpora import html_pages

    docs = tmp_path / "usr/share/doc/python3.11/html"
    (docs / "library").mkdir(parents=True)
    (docs / "library" / "os.html").write_text(SPHINX_PAGE)
    (docs / "genindex.html").write_text("<html><body>index of everything</body></html>")
    (tmp_path / "usr/share/doc/python3").symlink_to("python3.11")
    pages = list(html_pages("usr/share/doc/python3*/html/**/*.html", r"genindex")(tmp_path))
    assert [title for title, _ in pages] == ["9. Classes — Python 3.11 documentation"]
