"""The report page: one self-contained HTML file from a `ReportData`.

Layout of the file (nothing is fetched; the Content-Security-Policy forbids
every network request, so the page behaves the same offline, and lets only
the page's own script and style run, allowed by their sha256):

  <style>  static/report.css
  one <section> per entry of `SECTIONS` (heading, empty body)
  <script type="application/json" id="report-meta">   provenance, summary,
      column descriptions, thumbnail sheets (PNG data URIs), and where each
      array lies in the blob
  <script type="application/octet-stream" id="report-blob">  base64 of one
      gzip stream: every per-example array, little-endian, 8-byte aligned
      (float64 scores exactly as in the files, int32 labels and counts),
      then the offered score file: an npz is stored as its bytes between
      the arrays the blob already holds (the page joins the pieces back;
      the sha256 shown is the file's), any other file whole
  <script>  static/report.js (plain JavaScript, no library), which inflates
      the blob with the browser's DecompressionStream and draws each
      section.

`static/` is package data (setup.py); every text from the collection goes
into the page as JSON (`<` escaped) and is drawn as text, never as HTML.
"""

import base64
import dataclasses
import functools
import gzip
import hashlib
import html
import importlib.resources
import io
import json
import math
import struct
from typing import Dict, List, Optional, Tuple
import zipfile

import numpy as np

from heldout_tf.report import gather
from heldout_tf.report import images as images_lib

_ALIGN = 8
_DTYPES = {"f8": "<f8", "i4": "<i4", "u1": "|u1"}
_SHARED_MIN_BYTES = 1024  # Smaller arrays of a file are stored again.


class _Blob:
  """Arrays packed one after another (aligned), described for the page."""

  def __init__(self):
    self.parts: List[bytes] = []
    self.size = 0
    self.index: Dict[str, dict] = {}

    self.by_digest: Dict[bytes, str] = {}  # sha256 of bytes -> array.

  def add(self, name: str, values, dtype: str):
    array = np.ascontiguousarray(np.asarray(values).astype(_DTYPES[dtype]))
    raw = array.tobytes()
    self.index[name] = {"dtype": dtype, "offset": self.size,
                        "length": int(array.size)}
    if len(raw) >= _SHARED_MIN_BYTES:
      self.by_digest.setdefault(hashlib.sha256(raw).digest(), name)
    pad = (-len(raw)) % _ALIGN
    self.parts.append(raw + b"\0" * pad)
    self.size += len(raw) + pad

  def add_file(self, name: str, content: bytes) -> List[str]:
    """Stores `content`; returns the arrays whose bytes, joined, are it.

    The arrays of an uncompressed npz that the blob already holds (same
    bytes) are not stored twice.
    """
    pieces, at = [], 0
    for start, end, array in _shared_regions(content, self.by_digest):
      pieces.append(content[at:start])
      pieces.append(array)
      at = end
    pieces.append(content[at:])
    names = []
    for k, piece in enumerate(pieces):
      if isinstance(piece, str):
        names.append(piece)
      elif piece:
        self.add(f"{name}_{k}", np.frombuffer(piece, np.uint8), "u1")
        names.append(f"{name}_{k}")
    return names

  def encoded(self) -> str:
    return base64.b64encode(gzip.compress(b"".join(self.parts), 6,
                                          mtime=0)).decode("ascii")


def _shared_regions(content: bytes, by_digest: Dict[bytes, str]):
  """`(start, end, array)`: the byte ranges of `content` (an npz) holding
  the data of a member equal to a blob array; nothing if not an npz."""
  try:
    members = zipfile.ZipFile(io.BytesIO(content)).infolist()
  except (zipfile.BadZipFile, OSError, ValueError):
    return []
  regions = []
  for info in members:
    header = content[info.header_offset:info.header_offset + 30]
    if info.compress_type != zipfile.ZIP_STORED or len(header) < 30:
      continue
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    data = content[start:start + info.compress_size]
    if not data.startswith(b"\x93NUMPY") or len(data) < 12:
      continue
    size_bytes = 2 if data[6] == 1 else 4
    prefix = 8 + size_bytes + int.from_bytes(data[8:8 + size_bytes], "little")
    array = by_digest.get(hashlib.sha256(data[prefix:]).digest())
    if array is not None:
      regions.append((start + prefix, start + len(data), array))
  return sorted(regions)


def _clean(value):
  """JSON-able copy: numpy scalars to Python, NaN/inf to None."""
  if isinstance(value, dict):
    return {str(k): _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  if isinstance(value, np.ndarray):
    return _clean(value.tolist())
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if math.isfinite(value) else None
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def _sprites_meta(sprites: images_lib.Sprites, blob: _Blob, split: str):
  blob.add(f"slots_{split}", sprites.slots, "i4")
  return {"height": sprites.height, "width": sprites.width,
          "columns": images_lib.SHEET_COLUMNS,
          "per_sheet": images_lib.SHEET_COLUMNS * images_lib.SHEET_ROWS,
          "count": int(np.sum(sprites.slots >= 0)),
          "sheets": ["data:image/png;base64," +
                     base64.b64encode(s).decode("ascii")
                     for s in sprites.sheets]}


def _json_for_script(value) -> str:
  """JSON safe inside <script> (no '</', no U+2028/9 surprises)."""
  text = json.dumps(_clean(value), separators=(",", ":"), allow_nan=False)
  return (text.replace("<", "\\u003c").replace("\u2028", "\\u2028")
          .replace("\u2029", "\\u2029"))


def build(data: gather.ReportData,
          sprites: Optional[Dict[str, images_lib.Sprites]] = None,
          images_note: str = "",
          images_description: str = "") -> Tuple[dict, _Blob]:
  """The page's metadata and array blob (before encoding)."""
  blob = _Blob()
  columns = []
  for column in data.columns:
    blob.add(f"col_{column.key}", column.values, "f8")
    if column.se is not None:
      blob.add(f"se_{column.key}", column.se, "f8")
    columns.append({"key": column.key, "label": column.label,
                    "suspicious": column.suspicious, "about": column.about,
                    "has_se": column.se is not None})
  blob.add("n_in", data.n_in, "i4")
  blob.add("n_out", data.n_out, "i4")
  blob.add("mean_rank", data.mean_rank, "f8")
  blob.add("test_correct", data.test_correct, "i4")
  for name in ("labels", "clean_labels", "prediction", "test_labels"):
    value = getattr(data, name)
    if name == "clean_labels" and value is not None and np.array_equal(
        value, data.labels):
      continue  # No label was changed: nothing to show.
    if value is not None:
      blob.add(name, value, "i4")
  if data.noisy_idx is not None and len(data.noisy_idx):
    blob.add("noisy", np.isin(np.arange(data.n_train), data.noisy_idx), "u1")
  blob.add("pair_tr", data.pairs["tr_idx"], "i4")
  blob.add("pair_tt", data.pairs["tt_idx"], "i4")
  blob.add("pair_infl", data.pairs["infl"], "f8")
  attribution = _attribution(data.attribution, blob)
  downloads = []
  for number, (name, content) in enumerate(data.downloads):
    downloads.append({"name": name, "bytes": len(content),
                      "pieces": blob.add_file(f"file_{number}", content),
                      "sha256": hashlib.sha256(content).hexdigest()})
  class_names = data.class_names
  num_classes = data.provenance.get("num_classes") or 0
  if class_names is None and num_classes:
    class_names = [str(c) for c in range(num_classes)]
  meta = {
      "title": f"{data.experiment} \u2014 heldout_tf report",
      "provenance": data.provenance, "columns": columns,
      "class_names": class_names, "summary": data.summary,
      "thresholds": data.thresholds, "detection": data.detection,
      "removal": data.removal, "attribution": attribution,
      "warnings": data.warnings,
      "notes": data.notes, "downloads": downloads,
      "images": None, "images_note": images_note,
      "images_description": images_description,
  }
  if sprites:
    meta["images"] = {split: _sprites_meta(s, blob, split)
                      for split, s in sprites.items()}
  meta["arrays"] = blob.index
  return meta, blob


def _attribution(found, blob: _Blob) -> dict:
  """The attribution section's metadata (a `report.attribution.
  Attribution`); its influencers and per-example LDS go into `blob`
  (`att_top_pos_idx` ... [n_test * k] row by row, `att_lds` [n_test])."""
  meta = {"lds": found.lds, "method": found.method or None, "k": 0,
          "sources": found.sources}
  if found.influencers is not None:
    for key, values in found.influencers.items():
      blob.add(f"att_{key}", np.asarray(values).ravel(),
               "i4" if key.endswith("_idx") else "f8")
    meta["k"] = int(found.influencers["top_pos_idx"].shape[1])
  if found.method_lds is not None:
    blob.add("att_lds", found.method_lds, "f8")
  return meta


# ----------------------------------------------------------------- the page --


@dataclasses.dataclass(frozen=True)
class Section:
  """One section of the page: `<section id=key>` with a heading, a link in
  the navigation bar, and the script's `DRAW[key]` filling its body."""
  key: str
  title: str
  nav: str  # The link's text.


# In page order. A new section is one entry here and one drawing function
# in static/report.js (`DRAW`), fed by what `build` puts into the metadata.
SECTIONS = (
    Section("provenance", "Provenance", "Provenance"),
    Section("summary", "Summary", "Summary"),
    Section("explore", "Examples", "Examples"),
    Section("pairs", "High-influence pairs", "Pairs"),
    Section("attribution", "Attribution", "Attribution"),
    Section("suspicious", "Suspicious candidates", "Suspicious"),
    Section("downloads", "Downloads", "Downloads"),
)


@functools.lru_cache(maxsize=None)
def static_text(name: str) -> str:
  """The text of `static/<name>` (package data: `report.js`,
  `report.css`)."""
  return importlib.resources.files("heldout_tf.report").joinpath(
      "static").joinpath(name).read_text(encoding="utf-8")


def csp_hash(text: str) -> str:
  """The Content-Security-Policy source allowing the inline element whose
  content is exactly `text`: `'sha256-<base64>'`."""
  digest = hashlib.sha256(text.encode("utf-8")).digest()
  return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def content_security_policy(script: str, style: str) -> str:
  """The page's policy: nothing is fetched (`default-src 'none'`; images
  only from data: and blob: URLs), and only the page's own script and
  style, by hash, run: an injected inline script, `on...=` handler or
  `javascript:` URL does not."""
  return (f"default-src 'none'; img-src data: blob:; "
          f"style-src {csp_hash(style)}; script-src {csp_hash(script)}; "
          "base-uri 'none'; form-action 'none'")


_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<a class="skip" href="#explore">Skip to the examples</a>
<header class="top">
  <h1>{title}</h1>
  <nav aria-label="Sections">{nav}</nav>
  <form id="search" role="search" autocomplete="off">
    <label for="search-input" class="sr">Search</label>
    <input id="search-input" type="search"
      placeholder="train 123, test 45, class 7">
    <button type="submit">Go</button>
    <span id="search-status" role="status" aria-live="polite"></span>
  </form>
</header>
<main>
<p id="status" role="status">Loading the report&hellip; (this page needs
JavaScript and a browser from 2023 or later)</p>
"""
_SECTION = """<section id="{key}" aria-labelledby="h-{key}"><h2 id="h-{key}">\
{title}</h2><div class="body"></div></section>
"""
_TAIL = """</main>
<div id="card" class="overlay" hidden>
  <div class="card" role="dialog" aria-modal="true"
    aria-labelledby="card-title">
    <button type="button" class="close" aria-label="Close">&times;</button>
    <div class="card-body"></div>
  </div>
</div>
<footer>Made by heldout_tf {version} on {made}. One file: no network,
no server.</footer>
<script type="application/json" id="report-meta">{meta}</script>
<script type="application/octet-stream" id="report-blob">{blob}</script>
<script>{script}</script>
</body>
</html>
"""


def render(meta: dict, blob: _Blob) -> str:
  """The HTML text of the page."""
  script, style = static_text("report.js"), static_text("report.css")
  provenance = meta["provenance"]
  title = html.escape(meta["title"])
  nav = "".join(f'<a href="#{s.key}">{html.escape(s.nav)}</a>'
                for s in SECTIONS)
  sections = "".join(_SECTION.format(key=s.key, title=html.escape(s.title))
                     for s in SECTIONS)
  return (_HEAD.format(csp=content_security_policy(script, style),
                       title=title, style=style, nav=nav) + sections +
          _TAIL.format(version=html.escape(str(provenance["kit_version"])),
                       made=html.escape(provenance["made"]),
                       meta=_json_for_script(meta), blob=blob.encoded(),
                       script=script))
