"""The report page's CSS: system fonts only, light and dark, laptop and
phone widths (one column below 700 px)."""

STYLE = r"""
:root { --fg: #1d2330; --muted: #5b6475; --bg: #fbfbfd; --panel: #fff;
  --line: #dde1e8; --accent: #2456c9; --accent-soft: #c9d6f5;
  --warn: #8a4b00; --warn-bg: #fff4e0; --bad: #b3261e; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e8ee; --muted: #a3abba; --bg: #14171d; --panel: #1c2028;
    --line: #333946; --accent: #8fb0ff; --accent-soft: #34425f;
    --warn: #ffcf8a; --warn-bg: #3a2c14; --bad: #ff8a80; }
}
* { box-sizing: border-box; }
html { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
  "Helvetica Neue", Arial, sans-serif; color: var(--fg);
  background: var(--bg); }
body { margin: 0; }
a { color: var(--accent); }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); }
.skip { position: absolute; left: -999px; top: 0; background: var(--panel);
  padding: .4em .8em; z-index: 20; }
.skip:focus { left: .5em; }
header.top { position: sticky; top: 0; z-index: 10; background: var(--panel);
  border-bottom: 1px solid var(--line); padding: .5em 1em;
  display: flex; flex-wrap: wrap; align-items: center; gap: .4em 1.2em; }
header.top h1 { font-size: 1.15em; margin: 0; }
header nav { display: flex; flex-wrap: wrap; gap: .2em .9em; }
header nav a { text-decoration: none; }
#search { display: flex; gap: .3em; align-items: center; margin-left: auto;
  flex-wrap: wrap; }
#search input { width: 16em; max-width: 60vw; }
#search-status { color: var(--muted); font-size: .9em; }
main { max-width: 1280px; margin: 0 auto; padding: .5em 1em 2em; }
section { background: var(--panel); border: 1px solid var(--line);
  border-radius: 8px; padding: .4em 1em 1em; margin: 1em 0;
  scroll-margin-top: 5em; }
h2 { font-size: 1.2em; margin: .5em 0; }
h3 { font-size: 1em; margin: 1.2em 0 .4em; }
input, select, button { font: inherit; color: inherit;
  background: var(--bg); border: 1px solid var(--line); border-radius: 5px;
  padding: .2em .45em; }
button { cursor: pointer; background: var(--accent-soft); }
button:hover { border-color: var(--accent); }
.note { color: var(--muted); font-size: .92em; }
.warn { background: var(--warn-bg); color: var(--warn); padding: .5em .8em;
  border-radius: 6px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr;
  gap: .15em 1.2em; margin: .4em 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.stats { display: grid; grid-template-columns: repeat(auto-fill,
  minmax(11em, 1fr)); gap: .6em; }
.stat { border: 1px solid var(--line); border-radius: 6px; padding: .5em .7em; }
.stat b { display: block; font-size: 1.35em; }
.stat span { color: var(--muted); font-size: .88em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .6em; border-bottom: 1px solid var(--line);
  text-align: right; white-space: nowrap; }
thead th { position: sticky; top: 0; background: var(--panel); }
tbody th { text-align: left; font-weight: normal; }
thead th:first-child { text-align: left; }
.controls { display: flex; flex-wrap: wrap; gap: .5em 1.1em;
  align-items: center; margin: .5em 0; }
.controls input[type=number] { width: 7em; }
#count, #pair-count { color: var(--muted); }
.hists { display: grid; grid-template-columns: repeat(auto-fill,
  minmax(230px, 1fr)); gap: .8em; margin: .6em 0 1em; }
.hist { margin: 0; }
.hist figcaption { font-size: .88em; }
.hist .hcount, .hist .hrange { color: var(--muted); }
.hist .hclear { padding: 0 .4em; line-height: 1.2; }
.hplot { width: 100%; height: 80px; display: block; cursor: crosshair;
  touch-action: none; border-bottom: 1px solid var(--line); }
.hplot .all { fill: var(--line); }
.hplot .fg { fill: var(--accent); }
.hplot .sel { fill: var(--accent-soft); opacity: .6; }
.axis { display: flex; justify-content: space-between; font-size: .78em;
  color: var(--muted); }
.grid { display: grid; grid-template-columns: repeat(auto-fill,
  minmax(92px, 1fr)); gap: .45em; }
.grid.inline { grid-template-columns: repeat(auto-fill, minmax(86px, 92px));
  flex: 1; }
.tile { display: flex; flex-direction: column; align-items: center;
  text-decoration: none; color: inherit; border: 1px solid var(--line);
  border-radius: 6px; padding: .3em; font-size: .8em; line-height: 1.25;
  background: var(--panel); }
.tile:hover { border-color: var(--accent); }
.tile .tl { white-space: nowrap; }
.tile .cls { color: var(--muted); }
.tile .tv { font-variant-numeric: tabular-nums; font-weight: 600; }
.tile .tn { color: var(--muted); font-size: .92em; }
.thumb { width: 56px; height: 56px; image-rendering: auto;
  background: #000; border-radius: 3px; }
.thumb.big { width: 168px; height: 168px; image-rendering: pixelated; }
.noimg { display: flex; align-items: center; justify-content: center;
  color: #aaa; font-size: .7em; }
td .thumb { width: 36px; height: 36px; vertical-align: middle; }
#more, #pair-more, #cand-more { margin: .7em 0; }
.csv { margin-top: .6em; overflow-wrap: anywhere; }
.pair { display: flex; gap: .6em; align-items: center; padding: .5em 0;
  border-bottom: 1px solid var(--line); }
.pair > .tile { flex: 0 0 auto; }
.arrow { font-size: 1.4em; color: var(--muted); }
.noisy { color: var(--bad); }
.file code, .csv code { overflow-wrap: anywhere; font-size: .85em; }
.overlay { position: fixed; inset: 0; background: rgba(10, 14, 22, .55);
  z-index: 30; display: flex; align-items: flex-start;
  justify-content: center; overflow-y: auto; padding: 3vh 1em; }
.overlay[hidden] { display: none; }
.card { background: var(--panel); border-radius: 10px; padding: 1em 1.3em;
  max-width: 760px; width: 100%; position: relative;
  box-shadow: 0 10px 40px rgba(0, 0, 0, .35); }
.card .close { position: absolute; right: .6em; top: .5em;
  font-size: 1.3em; line-height: 1; }
.card-main { display: flex; flex-wrap: wrap; gap: 1em;
  align-items: flex-start; }
.values { flex: 1 1 18em; min-width: 0; }
.values th, .values td { text-align: left; white-space: normal; }
.values td { overflow-wrap: anywhere; }
.values .rank { color: var(--muted); font-size: .9em; }
footer { text-align: center; color: var(--muted); font-size: .85em;
  padding: 1em; }
@media (max-width: 700px) {
  html { font-size: 14px; }
  main { padding: .3em .4em 1em; }
  section { padding: .3em .6em .8em; }
  header.top { position: static; }
  #search { margin-left: 0; width: 100%; }
  #search input { flex: 1; }
  .grid { grid-template-columns: repeat(auto-fill, minmax(80px, 1fr)); }
  .pair { flex-direction: column; align-items: stretch; }
  .arrow { transform: rotate(90deg); align-self: center; }
  dl.facts { grid-template-columns: 1fr; }
  dl.facts dd { margin-bottom: .4em; }
  .thumb.big { width: 112px; height: 112px; }
}
"""
