"""README.md and the tracked docs/**/*.md: every relative link and image is a file git tracks, and
every command line they show parses.

A link to an ignored or never-added file works in the working tree and breaks on a fresh clone
(README pictures that do not show, `make evaluate` without its boxes file), so the check is
against `git ls-files`, not against the disk. No TensorFlow: this runs in milliseconds.
"""
import os
import posixpath
import re
import subprocess
from urllib.parse import unquote

import pytest

pytestmark = pytest.mark.unit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
# [text](target "title") and ![alt](target); the text may span lines and hold one level of [..]
INLINE_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
HTML_ATTR = re.compile(r"<[a-zA-Z][^>]*?\s(?:src|href)\s*=\s*(\"[^\"]*\"|'[^']*')", re.S)
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")  # http:, https:, mailto:, data:, //host ...


def _tracked():
    """Paths git tracks under ROOT (relative, '/'-separated), or skip outside a git checkout."""
    try:
        top = subprocess.run(["git", "-C", ROOT, "rev-parse", "--show-toplevel"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, universal_newlines=True)
        if top.returncode != 0 or os.path.realpath(top.stdout.strip()) != os.path.realpath(ROOT):
            pytest.skip("%s is not the top of a git checkout (e.g. an unpacked archive): "
                        "cannot tell which files are tracked" % ROOT)
        files = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip("git is not usable here (%s): cannot tell which files are tracked" % exc)
    return {f for f in files.decode("utf-8").split("\0") if f}


def link_targets(text):
    """Relative link and image targets of a markdown text (code spans and blocks excluded)."""
    text = HTML_COMMENT.sub("", INLINE_CODE.sub("", FENCE.sub("", text)))
    raw = _inline(text) + [m.group(1) for m in REFERENCE.finditer(text)]
    raw += [m.group(1)[1:-1] for m in HTML_ATTR.finditer(text)]
    targets = []
    for target in raw:
        target = target.strip().strip("<>").split("#", 1)[0].split("?", 1)[0]
        if target and not EXTERNAL.match(target):
            targets.append(unquote(target))
    return targets


def _inline(text):
    """Inline targets, including those inside a link's text (an image used as a link)."""
    found = []
    for m in INLINE_LINK.finditer(text):
        found += _inline(m.group(1)) + [m.group(2)]
    return found


def _documents(tracked):
    docs = ["README.md"] + sorted(f for f in tracked if f.startswith("docs/") and f.endswith(".md"))
    return [d for d in docs if os.path.isfile(os.path.join(ROOT, d))]


def broken_links(tracked):
    """[(document, target)] for every relative target that is not a tracked file or folder."""
    folders = {p for f in tracked for p in _parents(f)}
    broken = []
    for doc in _documents(tracked):
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
        for target in link_targets(text):
            base = "" if target.startswith("/") else posixpath.dirname(doc)
            path = posixpath.normpath(posixpath.join(base, target.lstrip("/")))
            if path not in tracked and path.rstrip("/") not in folders:
                broken.append((doc, target))
    return broken


def _parents(path):
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def test_link_parser_finds_links_images_and_html():
    text = ("See [the report](docs/r.md#top) and\n![a picture\nover two lines](pics/a.png \"title\").\n"
            "[web](https://example.org) [mail](mailto:a@b.c) [here](#section) [![badge](b.svg)](c.md)\n"
            "<img src=\"d.png\" width=3> <a href='e/f.html#x'>e</a>\n[ref]: g.txt\n"
            "`[code](not_a_link.md)`\n```\n![in a block](not_an_image.png)\n```\n")
    assert link_targets(text) == ["docs/r.md", "pics/a.png", "b.svg", "c.md", "g.txt", "d.png", "e/f.html"]


def test_readme_and_docs_links_are_tracked_files():
    tracked = _tracked()
    assert "README.md" in tracked
    broken = broken_links(tracked)
    assert not broken, ("links to files git does not track (missing, ignored or never added), "
                        "broken on a fresh clone:\n" + "\n".join("  %s: %s" % b for b in broken))


def test_docs_files_the_build_reads_are_tracked():
    """`make evaluate` and scripts/make_examples.sh read docs/evaluation/boxes.json: on a fresh
    clone it has to be there."""
    tracked = _tracked()
    named = set()
    for build_file in ["Makefile"] + sorted(f for f in tracked if f.startswith("scripts/") and f.endswith(".sh")):
        with open(os.path.join(ROOT, build_file), encoding="utf-8") as f:
            named |= {(build_file, p) for p in re.findall(r"(?<![\w/.-])docs/[\w/.-]*\w\.\w+", f.read())}
    missing = sorted((b, p) for b, p in named if p not in tracked)
    assert not missing, "files the build names but git does not track:\n" + "\n".join("  %s: %s" % m for m in missing)


# The shell commands the README and the site show: `python X.py ...`, `ggcam SUB ...` and
# `make TARGET` lines of their ```bash blocks. Each must parse with the parser that command
# uses (no TensorFlow: the parsers are built without it), and each make target must exist.
SCRIPTS = {"inference.py": "explain", "evaluate.py": "evaluate", "weights.py": "weights", "beam_explain.py": "beam"}
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)


def shown_commands(text):
    """[argv] of the command lines in a markdown text's bash blocks (continuations joined,
    comments and heredoc bodies dropped)."""
    import shlex
    commands = []
    for block in BASH_BLOCK.findall(text):
        block = re.sub(r"<<'(\w+)'\n.*?^\1$", "", block, flags=re.M | re.S).replace("\\\n", " ")
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def _ours(words):
    """('explain', argv) for a command of ours, ('make', [target, ...]) for make, else None."""
    if words[0] == "make":
        return "make", [w for w in words[1:] if "=" not in w and not w.startswith("-")]
    if words[0] == "ggcam" and len(words) > 1:
        return words[1], words[2:]
    if re.match(r"^(\S*/)?python[0-9.]*$", words[0]) and len(words) > 1 and words[1] in SCRIPTS:
        return SCRIPTS[words[1]], words[2:]
    return None


def test_shown_commands_are_found_in_bash_blocks():
    text = ("```bash\nmake demo RUNTIME=tf2   # a comment\npython inference.py --image=a.jpg \\\n"
            "    --label=282\nggcam weights --model=vgg_16\ncat > f <<'X'\npython weights.py --nonsense\nX\n```\n"
            "```python\npython inference.py --not-shell\n```\n")
    assert [_ours(w) for w in shown_commands(text)] == [
        ("make", ["demo"]), ("explain", ["--image=a.jpg", "--label=282"]), ("weights", ["--model=vgg_16"]), None]


def test_readme_and_docs_commands_parse_and_make_targets_exist():
    import importlib
    from ggcam.cli import UsageError
    tracked = _tracked()
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        targets = set(re.findall(r"^([\w-]+):", f.read(), re.M))
    problems, seen = [], 0
    for doc in _documents(tracked):
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
        for words in shown_commands(text):
            ours = _ours(words)
            if ours is None:
                continue
            seen += 1
            command, argv = ours
            if command == "make":
                problems += ["%s: make %s: no such target" % (doc, t) for t in argv if t not in targets]
                continue
            parser = importlib.import_module("ggcam.cli." + command).build_parser()
            try:
                if command == "beam":
                    parser.parse_known_args(argv)  # Beam's own options: test_beam parses them with Beam
                else:
                    parser.parse_args(argv)
            except (SystemExit, UsageError) as exc:
                problems.append("%s: %s (%s)" % (doc, " ".join(words), exc))
    assert seen > 20, seen
    assert not problems, "documented commands that do not parse:\n" + "\n".join(problems)


def test_a_one_image_runs_default_folder_in_the_clone_is_ignored_and_nothing_tracked_is():
    """`python inference.py --image=chelsea.png` in the clone writes ./chelsea_286: git ignores it;
    no ignore pattern hides a tracked file (docs included)."""
    tracked = _tracked()
    done = subprocess.run(["git", "-C", ROOT, "check-ignore", "--no-index", "chelsea_286/", "cat_and_coffee_282/",
                           "photo_7/", "x_1000/"], stdout=subprocess.PIPE, universal_newlines=True)
    assert done.stdout.split() == ["chelsea_286/", "cat_and_coffee_282/", "photo_7/", "x_1000/"]
    hidden = subprocess.run(["git", "-C", ROOT, "ls-files", "-ci", "--exclude-standard"], stdout=subprocess.PIPE,
                            universal_newlines=True).stdout.split()
    assert hidden == [] and "docs/evaluation/report.md" in tracked
