"""index.html: a static, offline gallery of a folder run, one row per image and target."""
import html
import os
from typing import Dict, List, Tuple
from urllib.parse import quote

from ggcam import methods as methods_mod
from ggcam.explanation import INPUT_FILE, OVERLAY, PANEL, PICTURES
from ggcam.io.safe_files import atomic_write_text
from ggcam import targets

INDEX_FILE = "index.html"


def _title(name: str) -> str:
    if name == OVERLAY:
        return "Overlay"
    if name.startswith(OVERLAY + "_"):
        return "Overlay (%s)" % _title(name[len(OVERLAY) + 1:])
    try:
        return methods_mod.get(name).title
    except ValueError:  # a method this process does not know (registered by another run)
        return name


def columns(row: Dict) -> List[Tuple[str, str]]:
    """(file, title) of a row's cells: the input, then each picture the row's explanation wrote
    (its ``files`` record, in the order written; the default methods' for older rows), but the panel."""
    names = [f[:-len(".png")] for f in row.get("files") or {} if f.endswith(".png")] or list(PICTURES)
    return [(INPUT_FILE, "Input")] + [(n + ".png", _title(n)) for n in names if n != PANEL]

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td { padding: 4px; text-align: center; vertical-align: top; font-size: 13px; }
td img { height: 160px; max-width: 260px; object-fit: contain; display: block; margin: auto; }
tr.caption td { padding-bottom: 14px; border-bottom: 1px solid #ddd; }
tr.failed td { color: #a00; text-align: left; border-bottom: 1px solid #ddd; }
#notice { color: #a00; font-weight: bold; }
"""

# Counts the pictures that failed to load and says so on the page (and in a data attribute).
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("td img"), ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
  if (ok < imgs.length) {
    document.getElementById("notice").textContent =
      (imgs.length - ok) + " of " + imgs.length + " pictures could not be loaded.";
  }
});
"""


def _row(row: Dict) -> str:
    e = html.escape
    if row.get("status") != "ok":
        # error messages name the file already
        return '<tr class="failed"><td colspan="%d">%s</td></tr>' % (
            len(columns({})), e(row.get("error") or "%s: failed" % row["path"]))
    folder = row["folder"]
    shown = columns(row)
    cells = "".join('<td><a href="{0}"><img src="{0}" alt="{1}"></a></td>'.format(
        e(quote(folder + "/" + f)), e(title)) for f, title in shown)
    score = ("p = %.3f" % row["probability"] if isinstance(row.get("probability"), float)
             else "logit = %.3f" % row["logit"] if isinstance(row.get("logit"), float) else "")
    first = "%s (%d), %s<br><small>%s</small>" % (
        e(targets.caption(row["target"], row["target_name"])), row["target_index"], score,
        e(os.path.basename(row["path"])))
    captions = "".join("<td>%s</td>" % e(c) if i else "<td>%s</td>" % c
                       for i, c in enumerate([first] + [t for _, t in shown[1:]]))
    return "<tr>%s</tr>\n<tr class=\"caption\">%s</tr>" % (cells, captions)


def write(folder: str, rows: List[Dict], title: str = "Guided Grad-CAM") -> str:
    """Write ``folder``/index.html for result rows (see results.py); returns its path."""
    ok = sum(1 for r in rows if r.get("status") == "ok")
    body = "\n".join(_row(r) for r in rows)
    page = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head>
<body>
<h1>{title}</h1>
<p>{ok} explained, {failed} failed. Click a picture to open it at full size.</p>
<p id="notice"></p>
<table>
{body}
</table>
<script>{script}</script>
</body></html>
""".format(title=html.escape(title), style=_STYLE, ok=ok, failed=len(rows) - ok, body=body,
           script=_SCRIPT)
    path = os.path.join(folder, INDEX_FILE)
    atomic_write_text(path, page)
    return path
