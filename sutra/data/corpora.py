"""Offline default corpora, written as JSONL ({"text", "source", "title", "license"} per line).

stdlib-docs: documentation that ships inside Python itself (pydoc topics and standard-library
  docstrings); needs no download.
debian-docs: permissively licensed Debian documentation packages, fetched with `apt-get download`
  and unpacked with `dpkg-deb -x` (nothing is installed), then converted to text. Third-party
  text is only ever fetched at run time into $SUTRA_HOME, never committed.

Either name can be given to `sutra data prepare` as a SOURCE.
"""

import ast
import gzip
import html
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import unquote

from sutra import assets
from sutra.errors import SutraError
from sutra.home import downloads_dir
from sutra.io import atomic_write_bytes

MIN_DOCSTRING_CHARS = 200
WORDNET_GLOSSES_PER_DOCUMENT = 50


def write_jsonl(path: Path, records: Iterable[dict]) -> dict:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    atomic_write_bytes(path, data)
    return {"documents": len(lines), "bytes": len(data)}


# ---- stdlib-docs ----------------------------------------------------------------------------

def pydoc_topics() -> Iterator[dict]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield {"text": topics[name].strip(), "source": "pydoc_data.topics", "title": name, "license": "PSF-2.0"}


def module_docstrings(path: Path, module: str) -> str | None:
    """One document per module: its docstring and every class/function docstring of 200+ characters."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):  # a few stdlib files are deliberately invalid (e.g. lib2to3 fixtures)
        return None
    sections = []
    module_doc = ast.get_docstring(tree)
    if module_doc and len(module_doc) >= MIN_DOCSTRING_CHARS:
        sections.append(f"Module {module}\n\n{module_doc}")

    def visit(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc and len(doc) >= MIN_DOCSTRING_CHARS:
                    kind = "class" if isinstance(child, ast.ClassDef) else "function"
                    sections.append(f"{module}.{name} ({kind})\n\n{doc}")
                visit(child, f"{name}.")

    visit(tree, "")
    return "\n\n".join(sections) if sections else None


def stdlib_modules(root: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if any(p in ("test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__") or p.startswith("test_") for p in parts):
            continue
        yield path, ".".join(p for p in parts if p != "__init__")


def stdlib_documents() -> Iterator[dict]:
    yield from pydoc_topics()
    for path, module in stdlib_modules(Path(sysconfig.get_paths()["stdlib"])):
        text = module_docstrings(path, module)
        if text:
            yield {"text": text, "source": "python-stdlib-docstrings", "title": module, "license": "PSF-2.0"}


@assets.register("stdlib-docs", "Python's own documentation: pydoc topics and standard-library docstrings (no download)")
def build_stdlib_docs(out: Path) -> dict:
    meta = write_jsonl(out / "stdlib-docs.jsonl", stdlib_documents())
    return {**meta, "python": sys.version.split()[0]}


# ---- text extraction helpers ------------------------------------------------------------------

BLOCK_TAGS = {"p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "tr",
              "table", "section", "blockquote", "hr", "article", "figure", "caption", "title"}
VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr", "source"}
SKIP_TAGS = {"script", "style", "head", "nav", "footer", "noscript", "svg", "button", "form"}
# class/id values of navigation, tables of contents and permalink anchors in Sphinx, DocBook and sqlite pages
SKIP_MARKERS = {"navheader", "navfooter", "nosearch", "fancy_toc", "sphinxsidebar", "sphinxsidebarwrapper", "related",
                "footer", "headerlink", "menu", "searchmenu", "tagline", "toc", "breadcrumbs", "docs-sidebar", "sidebar"}
MAIN_MARKERS = (("role", "main"), ("id", "yui-main"))


class _HTMLText(HTMLParser):
    """Visible text of the main part of a documentation page, with newlines at block elements."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.main, self.all = [], []
        self.skip_depth = 0  # >0 inside an element to drop
        self.main_depth = 0  # >0 inside the page's main element
        self.pre_depth = 0
        self.stack = []  # (tag, skipping, main, pre) per open element

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        markers = set((attrs.get("class") or "").split()) | {attrs.get("id") or ""}
        skipping = tag in SKIP_TAGS or bool(markers & SKIP_MARKERS)
        main = any(attrs.get(key) == value for key, value in MAIN_MARKERS)
        if tag in BLOCK_TAGS:
            self._emit("\n")
        if tag in VOID_TAGS:
            return
        self.stack.append((tag, skipping, main, tag == "pre"))
        self.skip_depth += skipping
        self.main_depth += main
        self.pre_depth += tag == "pre"

    def handle_endtag(self, tag):
        if tag in VOID_TAGS or not any(t == tag for t, *_ in self.stack):
            return
        while self.stack:  # close unclosed children too (real pages omit some end tags)
            open_tag, skipping, main, pre = self.stack.pop()
            self.skip_depth -= skipping
            self.main_depth -= main
            self.pre_depth -= pre
            if open_tag == tag:
                break
        if tag in BLOCK_TAGS:
            self._emit("\n")

    def handle_data(self, data):
        self._emit(data if self.pre_depth else re.sub(r"\s+", " ", data))

    def _emit(self, text):
        if self.skip_depth:
            return
        self.all.append(text)
        if self.main_depth:
            self.main.append(text)

    def text(self) -> str:
        raw = "".join(self.main) if "".join(self.main).strip() else "".join(self.all)
        lines = [line.rstrip() for line in raw.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(page: str) -> str:
    parser = _HTMLText()
    parser.feed(page)
    parser.close()
    return parser.text()


def html_title(page: str) -> str:
    match = re.search(r"<title>(.*?)</title>", page, re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(match.group(1))).strip() if match else ""


def wordnet_glosses(lines: Iterable[str], pos: str) -> Iterator[str]:
    """'razing (noun): complete destruction of a building' for every synset line of a WordNet data.POS file."""
    for line in lines:
        if line.startswith("  ") or " | " not in line:  # license header
            continue
        head, _, gloss = line.partition(" | ")
        fields = head.split()
        count = int(fields[3], 16)
        words = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
        synonyms = f" Synonyms: {', '.join(words[1:])}." if len(words) > 1 else ""
        yield f"{words[0]} ({pos}): {gloss.strip()}{synonyms}"


def strip_gutenberg(text: str) -> str:
    """The body of a Project Gutenberg e-text, without its license header and footer."""
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    start = re.search(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG.*$", text, re.M)
    end = re.search(r"^(\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG|End of (the )?Project Gutenberg)", text, re.M)
    return text[start.end() if start else 0:end.start() if end else len(text)].strip()


def r_lazyload_vectors(data_dir: Path) -> dict[str, list[str]]:
    """Character vectors of an R package's lazy-load database (data/Rdata.rdx + .rdb), read without R."""
    import rdata

    def parse(blob: bytes):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdata warns that a bare serialized object is "assumed RDS"
            return rdata.conversion.convert(rdata.parser.parse_data(blob))

    index = parse(gzip.decompress((data_dir / "Rdata.rdx").read_bytes()))
    database = (data_dir / "Rdata.rdb").read_bytes()
    vectors = {}
    for name, (offset, length) in sorted(index["variables"].items()):
        entry = database[int(offset):int(offset) + int(length)]
        value = parse(zlib.decompress(entry[4:]))  # 4-byte length, then a zlib stream
        vectors[str(name)] = [str(x) for x in value.tolist()]
    return vectors


# ---- debian-docs ------------------------------------------------------------------------------

def html_pages(pattern: str, *exclude: str) -> Callable[[Path], Iterator[tuple[str, str]]]:
    """An extractor of (title, text) for every HTML page under `pattern` whose path matches no `exclude` regex."""
    def extract(root: Path):
        seen = set()  # packages symlink directories (python3/html -> python3.11/html)
        for path in sorted(root.glob(pattern)):
            relative = str(path.relative_to(root))
            if path.resolve() not in seen and not any(re.search(x, relative) for x in exclude):
                seen.add(path.resolve())
                page = path.read_text(encoding="utf-8", errors="replace")
                yield html_title(page) or relative, html_to_text(page)
    return extract


def _wordnet(root: Path):
    glosses = []
    for pos, name in (("noun", "noun"), ("verb", "verb"), ("adj", "adjective"), ("adv", "adverb")):
        with open(root / f"usr/share/wordnet/data.{pos}", encoding="utf-8", errors="replace") as f:
            glosses += list(wordnet_glosses(f, name))
    for i in range(0, len(glosses), WORDNET_GLOSSES_PER_DOCUMENT):
        yield f"WordNet glosses {i // WORDNET_GLOSSES_PER_DOCUMENT + 1}", "\n".join(glosses[i:i + WORDNET_GLOSSES_PER_DOCUMENT])


def _austen(root: Path):
    for name, lines in r_lazyload_vectors(root / "usr/lib/R/site-library/janeaustenr/data").items():
        yield name, "\n".join(lines).strip()


def _moby_dick(root: Path):
    for name, parts in r_lazyload_vectors(root / "usr/lib/R/site-library/tokenizers/data").items():
        yield name, strip_gutenberg("\n".join(parts))


def _gzip_text(relative: str, title: str):
    def extract(root: Path):
        yield title, gzip.decompress((root / relative).read_bytes()).decode("utf-8", errors="replace").strip()
    return extract


SPHINX_SKIP = (r"genindex", r"(^|/)search\.html$", r"py-modindex", r"^_", r"/_", r"changelog", r"(^|/)releases?/", r"whatsnew/changelog")
# (candidate packages, license, extractor run on the unpacked tree)
DEBIAN_CORPORA = (
    (("python3.11-doc", "python3.12-doc", "python3.13-doc"), "PSF-2.0",
     html_pages("usr/share/doc/python3*/html/**/*.html", *SPHINX_SKIP, r"license\.html")),
    (("postgresql-doc-15", "postgresql-doc-16", "postgresql-doc-17"), "PostgreSQL",
     html_pages("usr/share/doc/postgresql-doc-*/html/*.html", r"/release-", r"/bookindex", r"/appendix-obsolete")),
    (("sqlite3-doc",), "public-domain", html_pages("usr/share/doc/sqlite3/**/*.html", r"releaselog", r"changes\.html", r"chronology")),
    (("python-django-doc",), "BSD-3-Clause", html_pages("usr/share/doc/python-django-doc/html/**/*.html", *SPHINX_SKIP)),
    (("python-sqlalchemy-doc",), "MIT", html_pages("usr/share/doc/python-sqlalchemy-doc/html/**/*.html", *SPHINX_SKIP)),
    (("wordnet-base",), "WordNet-3.0", _wordnet),
    (("r-cran-janeaustenr",), "public-domain", _austen),
    (("r-cran-tokenizers",), "public-domain", _moby_dick),
    (("jargon-text",), "public-domain", _gzip_text("usr/share/doc/jargon-text/jargon.txt.gz", "The Jargon File")),
    (("dict-devil",), "public-domain", _gzip_text("usr/share/dictd/devil.dict.dz", "The Devil's Dictionary")),
)


def _apt(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True)


def _available(candidates: tuple[str, ...]) -> str | None:
    for package in candidates:
        if _apt(["apt-cache", "show", "--no-all-versions", package]).returncode == 0:
            return package
    return None


def download_deb(candidates: tuple[str, ...], updated: list[bool]) -> Path:
    """The .deb of the first available candidate, from the download cache or `apt-get download`."""
    cache = downloads_dir() / "debian"
    cache.mkdir(parents=True, exist_ok=True)
    cached = next(filter(None, (max(cache.glob(f"{package}_*.deb"), default=None) for package in candidates)), None)
    problem = assets.discard_if_damaged(cached) if cached else None
    if cached and problem is None:
        return cached
    package = _available(candidates)
    if package is None and not updated[0]:
        updated[0] = True
        _apt(["apt-get", "update", "-qq"])  # fresh containers ship without package lists
        package = _available(candidates)
    if package is None:
        raise SutraError(f"none of the Debian packages {', '.join(candidates)} is known to apt; run 'apt-get update' (as root) and retry"
                         + assets.refetch_failed(cached, problem))
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        result = _apt(["apt-get", "download", package], cwd=Path(tmp))
        debs = list(Path(tmp).glob("*.deb"))
        if result.returncode != 0 or not debs:
            raise SutraError(f"apt-get download {package} failed: {(result.stderr.strip().splitlines() or ['no output'])[-1]}"
                             + assets.refetch_failed(cached, problem))
        target = cache / debs[0].name
        debs[0].replace(target)  # the cache only ever holds complete .debs
    return target


def debian_documents(work: Path) -> Iterator[dict]:
    missing = [tool for tool in ("apt-get", "apt-cache", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise SutraError(f"debian-docs needs {', '.join(missing)} (Debian/Ubuntu); on this system use the stdlib-docs corpus "
                         "or prepare your own files")
    updated = [False]
    for candidates, license_name, extract in DEBIAN_CORPORA:
        deb = download_deb(candidates, updated)
        package = deb.name.split("_")[0]
        root = work / package
        result = _apt(["dpkg-deb", "-x", str(deb), str(root)])
        if result.returncode != 0:
            raise SutraError(f"dpkg-deb -x {deb} failed: {result.stderr.strip()}; delete it to download it again")
        for title, text in extract(root):
            if text.strip():
                yield {"text": text, "source": f"debian:{unquote(deb.name.removesuffix('.deb'))}", "title": title, "license": license_name}
        shutil.rmtree(root)


@assets.register("debian-docs", "~12.8M tokens of permissively licensed Debian documentation (Python, PostgreSQL, SQLite, "
                                "Django, SQLAlchemy, WordNet, Austen, Moby-Dick, Jargon File, Devil's Dictionary); needs apt-get")
def build_debian_docs(out: Path) -> dict:
    with tempfile.TemporaryDirectory() as work:
        records = list(debian_documents(Path(work)))
    sources = sorted({r["source"] for r in records})
    meta = write_jsonl(out / "debian-docs.jsonl", records)
    return {**meta, "packages": sources}
