"""MkDocs hooks for the site. Its pages take their text from the README's sections (a line
``--8<-- "README.md:name"`` includes what lies between the README's ``[start:name]`` and
``[end:name]`` markers; ``--8<-- "FILE"`` a whole file), so the README and the site never say
two different things; links written for the repository then point at the site's own pages,
and the benchmark plots are published beside the benchmarks page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

_INCLUDE = re.compile(r'^--8<-- "(?P<file>[^":]+)(?::(?P<section>[\w-]+))?"$', re.MULTILINE)
_MARKER = re.compile(r"^<!-- --8<-- \[(?:start|end):[\w-]+\] -->\n?", re.MULTILINE)
# Repository paths the included text links to, and the page or file of the site each one is;
# a link to any other file of the repository becomes its path, as code.
_PAGES = {
    "docs/cluster.md": "cluster.md",
    "docs/demo.png": "demo.png",
    "docs/grafana/dashboard.png": "grafana/dashboard.png",
    "benches/RESULTS.md": "benchmarks.md",
    "benches/latency.png": "latency.png",
    "benches/latency-s6.png": "latency-s6.png",
    "README.md": "index.md",
}
_LINK = re.compile(r"(?P<image>!?)\[(?P<text>[^\]]*)\]\((?P<path>[^)#\s]+)(?P<anchor>#[^)\s]*)?\)")
_PLOTS = ("latency.png", "latency-s6.png")


def _included(match: re.Match[str]) -> str:
    text = Path(match["file"]).read_text()
    section = match["section"]
    if section is not None:
        start = f"<!-- --8<-- [start:{section}] -->"
        end = f"<!-- --8<-- [end:{section}] -->"
        if start not in text or end not in text:
            raise ValueError(f"{match['file']} has no section {section!r}")
        text = text.split(start, 1)[1].split(end, 1)[0]
    # Its links name the repository's files from its folder.
    folder = Path(match["file"]).parent
    return _LINK.sub(lambda link: _relinked(link, folder), _MARKER.sub("", text)).strip("\n")


def _relinked(link: re.Match[str], folder: Path) -> str:
    """A link of text included from ``folder`` of the repository, as the site has it."""
    path, text = link["path"], link["text"]
    if "://" in path:
        return link[0]
    path = (folder / path).as_posix()
    if path not in _PAGES:
        return f"`{path}`" if text in (path, f"`{path}`") else f"{text} (`{path}`)"
    return f"{link['image']}[{text}]({_PAGES[path]}{link['anchor'] or ''})"


def on_page_markdown(markdown: str, **_: Any) -> str:
    return _INCLUDE.sub(_included, markdown)


def on_files(files: Files, config: Any) -> Files:
    for plot in _PLOTS:
        source = Path("benches") / plot
        if source.exists():
            files.append(File.generated(config, plot, abs_src_path=str(source.resolve())))
    return files
