// The report page's script: plain JavaScript (ES2018), no library, no
// network. heldout_tf.report.page inlines it into each page (its sha256 goes
// into the page's Content-Security-Policy).
//
// Reads #report-meta (JSON) and #report-blob (base64 gzip of the arrays,
// inflated with the browser's DecompressionStream) and draws: provenance,
// summary, linked histograms, the examples grid, high-influence pairs,
// attribution (the LDS table, influencers), suspicious candidates,
// downloads (with sha256) and the example card that
// #train/<i> / #test/<j> open. Sort order: value (descending or ascending),
// ties by index, undefined (NaN) last: numpy's lexsort((index, -value)).
(function () {
'use strict';
const META = JSON.parse(document.getElementById('report-meta').textContent);
const PAGE = 96, BINS = 40, PAIR_PAGE = 12, CAND_PAGE = 50;
const A = {};            // Arrays by name.
const COLS = META.columns;
const byKey = {};
COLS.forEach(c => { byKey[c.key] = c; });
let N = 0, NT = 0;
const st = {cls: -1, sort: COLS[0].key, dir: 'desc', ranges: {},
            shown: PAGE, pairCls: -1, pairMin: null, pairShown: PAIR_PAGE,
            rankBy: 'mean', candShown: CAND_PAGE, k: META.summary.k};

// ------------------------------------------------------------ helpers --
function h(tag, attrs) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) {
    const v = attrs[k];
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (let i = 2; i < arguments.length; i++) add(e, arguments[i]);
  return e;
}
function add(e, ...kids) {
  kids.forEach(kid => {
    if (kid === null || kid === undefined || kid === false) return;
    if (Array.isArray(kid)) { kid.forEach(k => add(e, k)); return; }
    e.append(kid.nodeType ? kid : String(kid));
  });
}
function defined(x) {
  return x !== null && x !== undefined && !Number.isNaN(x);
}
function fmt(x, digits) {
  if (!defined(x)) return '\u2014';
  if (!Number.isFinite(x)) return x > 0 ? '\u221e' : '\u2212\u221e';
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
  return x.toFixed(digits === undefined ? 3 : digits);
}
function exact(x) { return defined(x) ? String(x) : '\u2014'; }
function pct(x) { return defined(x) ? (100 * x).toFixed(1) + ' %' : '\u2014'; }
function cname(c) {
  if (!defined(c) || c < 0) return '?';
  const names = META.class_names;
  return names && c < names.length ? names[c] : String(c);
}
function label(i) { return A.labels ? A.labels[i] : -1; }
function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
function table(head, rows, attrs) {
  return h('div', {class: 'scroll'}, h('table', attrs || {},
    h('thead', null, h('tr', null, head.map(c => h('th', {scope: 'col'}, c)))),
    h('tbody', null, rows.map(r => h('tr', null, r.map(
      (c, j) => h(j ? 'td' : 'th', j ? null : {scope: 'row'}, c)))))));
}
function option(value, text, selected) {
  return h('option', {value: value, selected: selected}, text);
}
function classSelect(id, value, onchange) {
  const names = META.class_names || [];
  return h('select', {id: id, disabled: !A.labels, onchange: onchange},
    option(-1, A.labels ? 'all classes' : 'no labels', value < 0),
    names.map((n, c) => option(c, n, value === c)));
}

async function inflate(b64) {
  const bin = atob(b64.trim());
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(
    new DecompressionStream('gzip'));
  return new Response(stream).arrayBuffer();
}
const TYPES = {f8: Float64Array, i4: Int32Array, u1: Uint8Array};
async function loadArrays() {
  const buffer = await inflate(
    document.getElementById('report-blob').textContent);
  for (const name in META.arrays) {
    const d = META.arrays[name];
    A[name] = new TYPES[d.dtype](buffer, d.offset, d.length);
  }
  N = A.n_in.length;
  NT = A.test_correct.length;
}

// ------------------------------------------------------------- sorting --
const orders = {};
function order(values, dir) {  // Value (dir), ties by index, NaN last.
  const idx = new Int32Array(values.length);
  for (let i = 0; i < idx.length; i++) idx[i] = i;
  const s = dir === 'desc' ? -1 : 1;
  return idx.sort((a, b) => {
    const x = values[a], y = values[b];
    const nx = x !== x, ny = y !== y;
    if (nx || ny) return nx === ny ? a - b : (nx ? 1 : -1);
    return x === y ? a - b : (x < y ? -s : s);
  });
}
function sortedBy(key, dir) {
  const id = key + '/' + dir;
  if (!orders[id]) {
    orders[id] = order(key === 'mean_rank' ? A.mean_rank : A['col_' + key],
                       dir);
  }
  return orders[id];
}
function suspicionOrder(key) {  // Most suspicious first.
  if (key === 'mean') return sortedBy('mean_rank', 'asc');
  return sortedBy(key, byKey[key].suspicious > 0 ? 'desc' : 'asc');
}

// ---------------------------------------------------------- histograms --
const hist = {};  // key -> {lo, hi, edges, bin (Uint8Array), all counts}
function setupHistograms() {
  COLS.forEach(c => {
    const v = A['col_' + c.key];
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < N; i++) {
      const x = v[i];
      if (Number.isFinite(x)) { if (x < lo) lo = x; if (x > hi) hi = x; }
    }
    const H = {lo: lo, hi: hi, edges: [], bin: new Uint8Array(N),
               all: new Int32Array(BINS)};
    const ok = lo <= hi;
    const width = ok && hi > lo ? (hi - lo) / BINS : 1;
    for (let b = 0; b <= BINS; b++) H.edges.push(lo + b * width);
    H.edges[BINS] = hi;
    for (let i = 0; i < N; i++) {
      const x = v[i];
      if (!Number.isFinite(x)) { H.bin[i] = 255; continue; }
      let b = Math.min(BINS - 1, Math.floor((x - lo) / width));
      while (b > 0 && x < H.edges[b]) b--;
      while (b < BINS - 1 && x >= H.edges[b + 1]) b++;
      H.bin[i] = b;
      H.all[b]++;
    }
    hist[c.key] = H;
  });
}
function inRange(key, i) {
  const r = st.ranges[key];
  if (!r) return true;
  const b = hist[key].bin[i];
  if (r.bins) return b !== 255 && b >= r.bins[0] && b <= r.bins[1];
  const x = A['col_' + key][i];
  return x >= r.lo && x <= r.hi;
}
function passes(i) {
  if (st.cls >= 0 && label(i) !== st.cls) return false;
  for (const key in st.ranges) if (!inRange(key, i)) return false;
  return true;
}
function filteredCounts() {  // Each histogram: every filter but its own.
  const counts = {};
  COLS.forEach(c => { counts[c.key] = new Int32Array(BINS); });
  const keys = Object.keys(st.ranges);
  for (let i = 0; i < N; i++) {
    if (st.cls >= 0 && label(i) !== st.cls) continue;
    let failed = null, fails = 0;
    for (const key of keys) {
      if (!inRange(key, i)) { fails++; failed = key; if (fails > 1) break; }
    }
    if (fails > 1) continue;
    COLS.forEach(c => {
      if (fails === 1 && failed !== c.key) return;
      const b = hist[c.key].bin[i];
      if (b !== 255) counts[c.key][b]++;
    });
  }
  return counts;
}
const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}
function drawHistograms() {
  const counts = filteredCounts();
  COLS.forEach(c => {
    const H = hist[c.key];
    const box = document.getElementById('hist-' + c.key);
    const plot = box.querySelector('svg');
    while (plot.firstChild) plot.removeChild(plot.firstChild);
    const W = 300, HT = 80, bw = W / BINS;
    let top = 1;
    for (let b = 0; b < BINS; b++) top = Math.max(top, H.all[b]);
    const scale = n => n ? Math.max(1, Math.sqrt(n / top) * (HT - 2)) : 0;
    const r = st.ranges[c.key];
    if (r && r.bins) {
      plot.append(svg('rect', {x: r.bins[0] * bw, y: 0, class: 'sel',
        width: (r.bins[1] - r.bins[0] + 1) * bw, height: HT}));
    }
    let total = 0;
    for (let b = 0; b < BINS; b++) {
      const all = H.all[b], n = counts[c.key][b];
      total += n;
      const bg = svg('rect', {x: b * bw + 0.5, width: bw - 1, class: 'all',
        y: HT - scale(all), height: scale(all)});
      const fg = svg('rect', {x: b * bw + 0.5, width: bw - 1, class: 'fg',
        y: HT - scale(n), height: scale(n), 'data-count': n});
      const t = svg('title', {});
      t.textContent = '[' + fmt(H.edges[b]) + ', ' + fmt(H.edges[b + 1]) +
        (b === BINS - 1 ? ']' : ')') + ': ' + n + ' shown of ' + all;
      fg.append(t);
      plot.append(bg, fg);
    }
    plot.setAttribute('data-total', total);
    box.querySelector('.hcount').textContent = total + ' shown';
    box.querySelector('.hrange').textContent = r ?
      'selected ' + (r.bins ? '[' + fmt(H.edges[r.bins[0]]) + ', ' +
        fmt(H.edges[r.bins[1] + 1]) + (r.bins[1] === BINS - 1 ? ']' : ')')
        : '[' + fmt(r.lo) + ', ' + fmt(r.hi) + ']') : '';
    box.querySelector('.hclear').hidden = !r;
  });
}
function brush(c, plot) {
  let start = null;
  const binAt = ev => {
    const box = plot.getBoundingClientRect();
    const f = (ev.clientX - box.left) / Math.max(1, box.width);
    return Math.max(0, Math.min(BINS - 1, Math.floor(f * BINS)));
  };
  plot.addEventListener('pointerdown', ev => {
    start = binAt(ev);
    plot.setPointerCapture(ev.pointerId);
    ev.preventDefault();
  });
  plot.addEventListener('pointerup', ev => {
    if (start === null) return;
    const end = binAt(ev);
    const bins = [Math.min(start, end), Math.max(start, end)];
    start = null;
    const r = st.ranges[c.key];
    if (r && r.bins && r.bins[0] === bins[0] && r.bins[1] === bins[1]) {
      delete st.ranges[c.key];
    } else {
      st.ranges[c.key] = {bins: bins};
    }
    update();
  });
  plot.addEventListener('keydown', ev => {  // Arrows move a one-bin range.
    const r = st.ranges[c.key];
    let b = r && r.bins ? r.bins[0] : -1;
    if (ev.key === 'ArrowRight') b = Math.min(BINS - 1, b + 1);
    else if (ev.key === 'ArrowLeft') b = Math.max(0, b - 1);
    else if (ev.key === 'Escape' || ev.key === 'Delete') b = null;
    else return;
    ev.preventDefault();
    if (b === null) delete st.ranges[c.key];
    else st.ranges[c.key] = {bins: [b, b]};
    update();
  });
}

// ----------------------------------------------------------- thumbnails --
const sheets = {train: [], test: []};
function sheet(split, s) {
  if (!sheets[split][s]) {
    const img = new Image();
    img.src = META.images[split].sheets[s];
    sheets[split][s] = img.decode().then(() => img);
  }
  return sheets[split][s];
}
const tiles = {train: new Map(), test: new Map()};
function tileURL(split, i) {
  const cache = tiles[split];
  if (cache.has(i)) return cache.get(i);
  const I = META.images[split];
  const slot = A['slots_' + split][i];
  const p = sheet(split, Math.floor(slot / I.per_sheet)).then(img => {
    const k = slot % I.per_sheet;
    const canvas = document.createElement('canvas');
    canvas.width = I.width; canvas.height = I.height;
    canvas.getContext('2d').drawImage(
      img, (k % I.columns) * I.width, Math.floor(k / I.columns) * I.height,
      I.width, I.height, 0, 0, I.width, I.height);
    return canvas.toDataURL('image/png');
  });
  cache.set(i, p);
  return p;
}
function hasImage(split, i) {
  return !!(META.images && META.images[split] && i >= 0 &&
            i < A['slots_' + split].length && A['slots_' + split][i] >= 0);
}
function thumb(split, i, big) {
  const cls = 'thumb' + (big ? ' big' : '');
  if (!hasImage(split, i)) {
    return h('span', {class: cls + ' noimg', 'aria-hidden': 'true'},
             'no image');
  }
  const img = h('img', {class: cls, alt: '', width: META.images[split].width,
                        height: META.images[split].height});
  tileURL(split, i).then(url => { img.src = url; });
  return img;
}

// ---------------------------------------------------------------- tiles --
function trainTile(i, valueKey, extra) {
  const v = valueKey ? A['col_' + valueKey][i] : null;
  const name = cname(label(i));
  return h('a', {class: 'tile', href: '#train/' + i, 'data-index': i,
    'aria-label': 'training example ' + i + ', class ' + name +
      (valueKey ? ', ' + byKey[valueKey].label + ' ' + fmt(v) : '')},
    thumb('train', i),
    h('span', {class: 'tl'}, h('b', null, '#' + i), ' ',
      h('span', {class: 'cls'}, name)),
    valueKey ? h('span', {class: 'tv'}, fmt(v)) : null,
    h('span', {class: 'tn', title: 'runs that trained on it / held it out'},
      'in ' + A.n_in[i] + ' \u00b7 out ' + A.n_out[i]),
    extra || null);
}
function testTile(j, extra) {
  const c = A.test_labels ? A.test_labels[j] : -1;
  return h('a', {class: 'tile', href: '#test/' + j, 'data-index': j,
    'aria-label': 'test example ' + j + ', class ' + cname(c)},
    thumb('test', j),
    h('span', {class: 'tl'}, h('b', null, 'test #' + j), ' ',
      h('span', {class: 'cls'}, cname(c))),
    extra || null);
}
function gridKeys(ev) {  // Arrow keys move between tiles of a grid.
  const tile = ev.target.closest('.tile');
  if (!tile) return;
  const all = Array.from(ev.currentTarget.querySelectorAll('.tile'));
  const at = all.indexOf(tile);
  let perRow = all.findIndex(t => t.offsetTop !== all[0].offsetTop);
  if (perRow < 1) perRow = all.length;
  const step = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow,
                ArrowUp: -perRow, Home: -at, End: all.length - 1 - at};
  if (!(ev.key in step)) return;
  const next = all[Math.max(0, Math.min(all.length - 1, at + step[ev.key]))];
  ev.preventDefault();
  next.focus();
}

// ------------------------------------------------------- the sections --
function dl(pairs) {
  return h('dl', {class: 'facts'}, pairs.filter(p => p).map(
    p => [h('dt', null, p[0]), h('dd', null, p[1])]));
}
function drawProvenance(el) {
  const P = META.provenance;
  const ratios = P.ratios.map((r, k) => r + ' (' + P.runs_per_ratio[k] +
    ' runs)').join(', ');
  const acc = P.accuracy.map(a => (P.accuracy.length > 1 ? 'ratio ' +
    a.ratio + ': ' : '') + pct(a.mean) + ' \u00b1 ' + pct(a.sd) +
    ' (sd over ' + a.runs + ' runs)').join('; ');
  add(el, dl([
    ['experiment', P.experiment], ['dataset', P.dataset],
    ['model', P.model], ['ratios', ratios],
    ['examples', P.n_train + ' training, ' + P.n_test + ' test'],
    ['test accuracy', acc],
    ['standard errors', P.standard_errors.text || '\u2014'],
    ['images', META.images ? META.images_description :
      (META.images_note || 'no images')],
    ['estimates', P.sources.estimates],
    P.sources.scores ? ['quality scores', P.sources.scores] : null,
    ['collection', P.root], ['kit', 'heldout_tf ' + P.kit_version],
    ['made', P.made]]));
  const settings = Object.keys(P.settings);
  if (settings.length) {
    add(el, h('details', null, h('summary', null,
      'Settings from config.json (' + settings.length + ')'),
      dl(settings.map(k => [k, P.settings[k]]))));
  }
  META.warnings.forEach(w => add(el, h('p', {class: 'warn'}, 'Warning: ' + w)));
  META.notes.forEach(n => add(el, h('p', {class: 'note'}, n)));
}
function stat(value, text) {
  return h('div', {class: 'stat'}, h('b', null, value), h('span', null, text));
}
function drawSummary(el) {
  const S = META.summary, T = META.thresholds;
  add(el, h('div', {class: 'stats'},
    stat(S.num_runs, 'runs'),
    stat(S.n_train + ' / ' + S.n_test, 'training / test examples'),
    defined(S.memorized) ? stat(S.memorized, 'memorized (memorization \u2265 ' +
      T.mem + ')') : null,
    stat(S.memorized_half, 'memorization \u2265 0.5'),
    stat(S.low_cscore, 'C-score < 0.5'),
    defined(T.infl) ? stat(S.pairs, 'high-influence pairs (influence \u2265 ' +
      T.infl + ', memorization \u2265 ' + T.mem + '): ' + S.pair_train +
      ' training, ' + S.pair_test + ' test examples') : null,
    stat(S.never_held_out + ' / ' + S.never_trained,
         'never held out / never trained on (no estimate for them)')));
  const noise = A.noisy ? A.noisy.reduce((a, b) => a + b, 0) : 0;
  const head = ['score', 'defined', 'top ' + S.k];
  if (A.prediction && A.labels) head.push('of which prediction \u2260 label');
  if (noise) head.push('of which known noisy');
  add(el, h('h3', null, 'Suspicious candidates per score'),
    h('p', {class: 'note'}, 'The top ' + S.k + ' of each score (' +
      (noise ? 'k = the ' + noise + ' known noisy examples' :
       'k = 1 % of the training set') + '), most suspicious end.'),
    table(head, S.candidates.map(r => [r.label, r.defined, r.top].concat(
      'disagree' in r ? [r.disagree] : [], 'noisy' in r ? [r.noisy] : []))));
  if (META.detection && META.detection.length) {
    const cols = Object.keys(META.detection[0]);
    add(el, h('h3', null, 'Detection of the known noisy examples'),
      table(cols, META.detection.map(r => cols.map(
        k => typeof r[k] === 'number' || r[k] === null ? fmt(r[k]) : r[k]))));
  }
  if (META.removal && META.removal.length) {
    const cols = Object.keys(META.removal[0]);
    add(el, h('details', null, h('summary', null,
      'Removal ablation (' + META.removal.length + ' rows)'),
      table(cols, META.removal.map(r => cols.map(
        k => typeof r[k] === 'number' || r[k] === null ? fmt(r[k]) : r[k])))));
  }
}

function drawExploreFrame(el) {
  const sortSel = h('select', {id: 'sort', onchange: ev => {
    st.sort = ev.target.value; st.shown = PAGE; syncRangeInputs(); update();
  }}, COLS.map(c => option(c.key, c.label, c.key === st.sort)));
  const dirSel = h('select', {id: 'dir', onchange: ev => {
    st.dir = ev.target.value; st.shown = PAGE; update();
  }}, option('desc', 'highest first', true), option('asc', 'lowest first'));
  const rangeInput = (id, text) => h('label', null, text, h('input', {
    id: id, type: 'number', step: 'any', onchange: applyRangeInputs}));
  add(el, h('div', {class: 'controls'},
    h('label', null, 'Class ', classSelect('class', st.cls, ev => {
      st.cls = +ev.target.value; st.shown = PAGE; update();
    })),
    h('label', null, 'Sort by ', sortSel), h('label', null, 'Order ', dirSel),
    rangeInput('range-min', 'min '), rangeInput('range-max', 'max '),
    h('button', {type: 'button', id: 'reset', onclick: () => {
      st.cls = -1; st.ranges = {}; st.shown = PAGE;
      document.getElementById('class').value = -1;
      syncRangeInputs(); update();
    }}, 'Reset filters'),
    h('span', {id: 'count', role: 'status', 'aria-live': 'polite'})));
  add(el, h('p', {class: 'note'}, 'Histograms show all examples (light) ' +
    'and those passing the other filters (dark). Drag across one to keep ' +
    'only that range (drag again over the same bins, or \u00d7, to clear); ' +
    'with a histogram focused, \u2190 \u2192 select one bin, Esc clears.'));
  add(el, h('div', {class: 'hists'}, COLS.map(c => {
    const plot = svg('svg', {viewBox: '0 0 300 80', preserveAspectRatio:
      'none', tabindex: 0, role: 'img', class: 'hplot',
      'aria-label': 'histogram of ' + c.label});
    brush(c, plot);
    return h('figure', {class: 'hist', id: 'hist-' + c.key},
      h('figcaption', null, h('b', null, c.label), ' ',
        h('span', {class: 'hcount'}), ' ',
        h('span', {class: 'hrange'}), ' ',
        h('button', {type: 'button', class: 'hclear', hidden: true,
          'aria-label': 'clear the ' + c.label + ' range',
          onclick: () => { delete st.ranges[c.key]; syncRangeInputs();
                           update(); }}, '\u00d7')),
      plot,
      h('div', {class: 'axis'}, hist[c.key].lo <= hist[c.key].hi ?
        [h('span', null, fmt(hist[c.key].lo)),
         h('span', null, fmt(hist[c.key].hi))] :
        h('span', null, 'no example has a value')));
  })));
  const grid = h('div', {id: 'grid', class: 'grid', onkeydown: gridKeys});
  add(el, grid, h('button', {type: 'button', id: 'more', onclick: () => {
    st.shown += PAGE; drawGrid();
  }}, 'Show more'));
  add(el, h('div', {class: 'csv'}, h('button', {type: 'button',
    id: 'download-csv', onclick: downloadCSV},
    'Download these examples as CSV'),
    h('span', null, ' sha256 '),
    h('code', {id: 'csv-sha256', class: 'csv-sha256'}, '\u2014')));
}
function applyRangeInputs() {
  const lo = parseFloat(document.getElementById('range-min').value);
  const hi = parseFloat(document.getElementById('range-max').value);
  if (Number.isNaN(lo) && Number.isNaN(hi)) delete st.ranges[st.sort];
  else st.ranges[st.sort] = {lo: Number.isNaN(lo) ? -Infinity : lo,
                             hi: Number.isNaN(hi) ? Infinity : hi};
  st.shown = PAGE;
  update();
}
function syncRangeInputs() {
  const r = st.ranges[st.sort];
  const H = hist[st.sort];
  const lo = r ? (r.bins ? H.edges[r.bins[0]] : r.lo) : null;
  const hi = r ? (r.bins ? H.edges[r.bins[1] + 1] : r.hi) : null;
  document.getElementById('range-min').value =
    defined(lo) && Number.isFinite(lo) ? lo : '';
  document.getElementById('range-max').value =
    defined(hi) && Number.isFinite(hi) ? hi : '';
}
let current = [];
function drawGrid() {
  const grid = document.getElementById('grid');
  clear(grid);
  const shown = current.slice(0, st.shown);
  shown.forEach(i => grid.append(trainTile(i, st.sort)));
  document.getElementById('more').hidden = current.length <= st.shown;
  document.getElementById('count').textContent = current.length +
    ' of ' + N + ' training examples match; showing ' + shown.length;
}
function update() {
  const all = sortedBy(st.sort, st.dir);
  current = [];
  for (let k = 0; k < all.length; k++) if (passes(all[k])) current.push(all[k]);
  drawHistograms();
  drawGrid();
  syncRangeInputs();
}

// ----------------------------------------------------------------- pairs --
function drawPairsFrame(el) {
  const n = A.pair_tr.length;
  if (!n) {
    add(el, h('p', {class: 'note'}, defined(META.thresholds.infl) ?
      'No pair reaches the thresholds (influence \u2265 ' +
      META.thresholds.infl + ', memorization \u2265 ' +
      META.thresholds.mem + ').' : 'The estimates hold no pairs.'));
    return;
  }
  st.pairMin = META.thresholds.infl;
  add(el, h('p', {class: 'note'}, 'Each training example beside the test ' +
    'examples it influences (influence: how much more often a test ' +
    'example is right when the training example is in the training set).'));
  add(el, h('div', {class: 'controls'},
    h('label', null, 'Class of the training example ',
      classSelect('pair-class', -1, ev => {
        st.pairCls = +ev.target.value; st.pairShown = PAIR_PAGE;
        drawPairs();
      })),
    h('label', null, 'Influence \u2265 ', h('input', {id: 'pair-min',
      type: 'number', step: '0.01', value: st.pairMin, onchange: ev => {
        const v = parseFloat(ev.target.value);
        st.pairMin = Number.isNaN(v) ? -Infinity : v;
        st.pairShown = PAIR_PAGE; drawPairs();
      }})),
    h('span', {id: 'pair-count', role: 'status', 'aria-live': 'polite'})));
  add(el, h('div', {id: 'pair-list'}),
    h('button', {type: 'button', id: 'pair-more', onclick: () => {
      st.pairShown += PAIR_PAGE; drawPairs();
    }}, 'Show more'));
  drawPairs();
}
function pairGroups(filter) {
  const groups = new Map();
  for (let p = 0; p < A.pair_tr.length; p++) {
    if (!filter(p)) continue;
    const i = A.pair_tr[p];
    if (!groups.has(i)) groups.set(i, []);
    groups.get(i).push(p);
  }
  const byInfl = (a, b) => A.pair_infl[b] - A.pair_infl[a] ||
    A.pair_tt[a] - A.pair_tt[b];
  const list = Array.from(groups.entries()).map(e => [e[0], e[1].sort(byInfl)]);
  list.sort((a, b) => A.pair_infl[b[1][0]] - A.pair_infl[a[1][0]] ||
    a[0] - b[0]);
  return list;
}
function drawPairs() {
  const list = pairGroups(p => A.pair_infl[p] >= st.pairMin &&
    (st.pairCls < 0 || label(A.pair_tr[p]) === st.pairCls));
  const el = document.getElementById('pair-list');
  clear(el);
  let count = 0;
  list.forEach(g => { count += g[1].length; });
  list.slice(0, st.pairShown).forEach(g => {
    const i = g[0];
    el.append(h('div', {class: 'pair', 'data-train': i},
      trainTile(i, 'memorization'),
      h('span', {class: 'arrow', 'aria-hidden': 'true'}, '\u2192'),
      h('div', {class: 'grid inline', onkeydown: gridKeys},
        g[1].map(p => testTile(A.pair_tt[p], h('span', {class: 'tv'},
          'infl ' + fmt(A.pair_infl[p])))))));
  });
  document.getElementById('pair-count').textContent = count + ' pairs, ' +
    list.length + ' training examples';
  document.getElementById('pair-more').hidden = list.length <= st.pairShown;
}

// ----------------------------------------------------------- attribution --
const ATT_TILES = 12;  // Test examples shown in the section.
function drawAttribution(el) {
  const T = META.attribution;
  if (!T.lds && !T.method) {
    add(el, h('p', {class: 'note'}, 'No attribution results for this ' +
      'collection. heldout lds writes its table to <ratio>/attribution/' +
      'lds.npz and heldout datamodels its fit to <ratio>/attribution/' +
      'datamodels.npz, where this report finds them (or pass --lds and ' +
      '--attribution).'));
    return;
  }
  if (T.lds) {
    const L = T.lds;
    add(el, h('p', null, 'Linear datamodeling score (LDS) on ' + L.runs +
      ', ' + L.n_test + ' test examples (' + L.file + '): per test ' +
      'example, the Spearman correlation over the evaluation runs between ' +
      'the attribution\u2019s predicted effect of each run\u2019s training ' +
      'subset and the run\u2019s margin; mean \u00b1 standard error over ' +
      'test examples. A correlation that is not defined (a constant ' +
      'prediction or margin) counts as 0.'),
    table(['method', 'LDS', '\u00b1 SE', 'not defined', 'fitting runs'],
      L.rows.map(r => [r.method, fmt(r.mean), fmt(r.se),
        r.undefined + ' / ' + L.n_test, String(r.fit_runs)]),
      {id: 'lds-table'}));
  }
  if (!T.method) return;
  add(el, h('p', {class: 'note'}, 'Each test example\u2019s card shows ' +
    'its top ' + T.k + ' positive and negative influencers by ' + T.method +
    '.'));
  const shown = A.att_lds ? Array.from(order(A.att_lds, 'desc')) :
    Array.from({length: NT}, (_, j) => j);
  add(el, h('h3', null, A.att_lds ? 'Test examples, highest LDS first' :
    'Test examples'),
    h('div', {class: 'grid inline', id: 'att-grid', onkeydown: gridKeys},
      shown.slice(0, ATT_TILES).map(j => testTile(j, A.att_lds ?
        h('span', {class: 'tv'}, 'LDS ' + fmt(A.att_lds[j])) : null))));
}
function influencers(j) {
  const T = META.attribution;
  if (!T.method || !A.att_top_pos_idx) return null;
  const k = T.k;
  const side = (sign, title) => {
    const idx = A['att_top_' + sign + '_idx'];
    const w = A['att_top_' + sign + '_weight'];
    const tiles = [];
    for (let q = j * k; q < (j + 1) * k; q++) {
      if (idx[q] < 0) continue;
      tiles.push(trainTile(idx[q], null, h('span', {class: 'tv',
        title: 'score ' + exact(w[q])}, (w[q] > 0 ? '+' : '') + fmt(w[q]))));
    }
    return [h('h4', null, title),
      tiles.length ? h('div', {class: 'grid inline',
        'data-influencers': sign, onkeydown: gridKeys}, tiles) :
        h('p', {class: 'note'}, 'none')];
  };
  return h('div', {class: 'influencers'},
    h('h3', null, 'Top influencers by ' + T.method),
    A.att_lds ? h('p', {class: 'note', 'data-key': 'lds'},
      'LDS of this test example: ' + fmt(A.att_lds[j])) : null,
    side('pos', 'positive (raise its margin)'),
    side('neg', 'negative (lower its margin)'));
}

// ------------------------------------------------------------ suspicious --
function drawSuspiciousFrame(el) {
  add(el, h('div', {class: 'controls'},
    h('label', null, 'Rank by ', h('select', {id: 'rank-by', onchange: ev => {
      st.rankBy = ev.target.value; st.candShown = CAND_PAGE;
      drawSuspicious();
    }}, option('mean', 'mean rank over the scores', true),
      COLS.map(c => option(c.key, c.label + (c.suspicious > 0 ?
        ' (highest)' : ' (lowest)'))))),
    h('label', null, 'Agreement at k = ', h('input', {id: 'agree-k',
      type: 'number', min: 1, max: N, step: 1, value: st.k, onchange: ev => {
        const k = parseInt(ev.target.value, 10);
        if (k >= 1) { st.k = Math.min(N, k); drawAgreement(); }
      }}))));
  add(el, h('div', {id: 'cand-table'}), h('button', {type: 'button',
    id: 'cand-more', onclick: () => {
      st.candShown += CAND_PAGE; drawSuspicious();
    }}, 'Show more'));
  add(el, h('h3', null, 'How much the scores agree'),
    h('p', {class: 'note'}, 'Row score\u2019s top k: the fraction also in ' +
      'the column score\u2019s top k.'), h('div', {id: 'agreement'}));
  drawSuspicious();
  drawAgreement();
}
function drawSuspicious() {
  const rows = suspicionOrder(st.rankBy).slice(0, st.candShown);
  const head = ['rank', 'image', 'index', 'given label'];
  if (A.prediction) head.push('held-out prediction');
  if (A.clean_labels && A.noisy) head.push('clean label');
  COLS.forEach(c => head.push(c.label));
  head.push('mean rank');
  const lines = Array.from(rows).map((i, r) => {
    const cells = [String(r + 1), thumb('train', i),
      h('a', {href: '#train/' + i}, '#' + i), cname(label(i))];
    if (A.prediction) cells.push(A.prediction[i] >= 0 ?
      cname(A.prediction[i]) : 'never held out');
    if (A.clean_labels && A.noisy) cells.push(A.noisy[i] ?
      h('span', {class: 'noisy'}, cname(A.clean_labels[i]) + ' (noisy)') :
      cname(A.clean_labels[i]));
    COLS.forEach(c => cells.push(fmt(A['col_' + c.key][i])));
    cells.push(A.mean_rank[i].toFixed(1));
    return cells;
  });
  const el = document.getElementById('cand-table');
  clear(el);
  el.append(table(head, lines, {id: 'candidates'}));
  document.getElementById('cand-more').hidden = st.candShown >= N;
}
function drawAgreement() {
  const k = st.k;
  const tops = COLS.map(c => new Set(suspicionOrder(c.key).slice(0, k)));
  const rows = COLS.map((c, a) => [c.label].concat(COLS.map((d, b) => {
    let n = 0;
    tops[a].forEach(i => { if (tops[b].has(i)) n++; });
    return fmt(n / k, 2);
  })));
  const el = document.getElementById('agreement');
  clear(el);
  el.append(table(['top ' + k].concat(COLS.map(c => c.label)), rows,
                  {id: 'agreement-table'}));
}

// -------------------------------------------------------------- downloads --
function hex(buffer) {
  return Array.from(new Uint8Array(buffer),
                    b => b.toString(16).padStart(2, '0')).join('');
}
async function sha256(bytes) {
  if (!(window.crypto && crypto.subtle)) return null;
  return hex(await crypto.subtle.digest('SHA-256', bytes));
}
function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h('a', {href: url, download: name, hidden: true});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
// A CSV cell of text (a class name, a column name): one a spreadsheet shows
// as text. Text beginning with = + - @, a tab or a carriage return would be
// read as a formula, so it gets a leading ' (numbers the page writes are
// left as they are); commas, quotes and line breaks are quoted.
function textCell(text) {
  let s = String(text);
  if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}
function csvText() {
  const head = ['index', 'label', 'class_name'];
  if (A.clean_labels) head.push('clean_label');
  if (A.noisy) head.push('known_noisy');
  if (A.prediction) head.push('heldout_prediction');
  COLS.forEach(c => head.push(c.key));
  head.push('mean_rank', 'n_in', 'n_out');
  const lines = [head.map(textCell).join(',')];
  current.forEach(i => {
    const row = [i, label(i), textCell(cname(label(i)))];
    if (A.clean_labels) row.push(A.clean_labels[i]);
    if (A.noisy) row.push(A.noisy[i]);
    if (A.prediction) row.push(A.prediction[i]);
    COLS.forEach(c => {
      const v = A['col_' + c.key][i];
      row.push(defined(v) ? String(v) : '');
    });
    row.push(String(A.mean_rank[i]), A.n_in[i], A.n_out[i]);
    lines.push(row.join(','));
  });
  return lines.join('\n') + '\n';
}
async function downloadCSV() {
  const bytes = new TextEncoder().encode(csvText());
  const digest = await sha256(bytes);
  document.querySelectorAll('.csv-sha256').forEach(out => {
    out.textContent = digest || 'unavailable in this browser';
    out.setAttribute('data-rows', current.length);
  });
  save(new Blob([bytes], {type: 'text/csv'}),
       META.provenance.experiment + '-examples.csv');
}
function drawDownloads(el) {
  add(el, h('p', {class: 'csv'}, h('button', {type: 'button',
    onclick: downloadCSV}, 'Download the examples grid\u2019s rows as CSV'),
    ' (every example passing the current filters, in the grid\u2019s ' +
    'order) sha256 ', h('code', {class: 'csv-sha256'}, '\u2014')));
  META.downloads.forEach(d => {
    const check = h('span', {class: 'file-check', role: 'status'});
    add(el, h('p', {class: 'file'}, h('button', {type: 'button',
      class: 'download-file', 'data-name': d.name, onclick: () => {
        const pieces = d.pieces.map(name => new Uint8Array(
          A[name].buffer, A[name].byteOffset, A[name].byteLength));
        const file = new Blob(pieces, {type: 'application/octet-stream'});
        save(file, d.name);
        file.arrayBuffer().then(sha256).then(digest => {
          check.textContent = digest === null ? '' : digest === d.sha256 ?
            ' ✓ checked' : ' ✗ differs: ' + digest;
        });
      }}, 'Download ' + d.name), ' (' + d.bytes + ' bytes) sha256 ',
      h('code', {class: 'file-sha256'}, d.sha256), check));
  });
}

// ------------------------------------------------------------------ card --
let returnFocus = null;
function row(name, value) {
  return h('tr', null, h('th', {scope: 'row'}, name), h('td', null, value));
}
function trainCard(i) {
  const rows = [row('given label', cname(label(i)))];
  if (A.clean_labels) rows.push(row('clean label', cname(A.clean_labels[i])));
  if (A.noisy) rows.push(row('known noisy', A.noisy[i] ? 'yes' : 'no'));
  if (A.prediction) {
    const r = row('held-out prediction',
      A.prediction[i] >= 0 ? cname(A.prediction[i]) : 'never held out');
    r.setAttribute('data-key', 'prediction');
    r.title = 'argmax of the mean softmax of the runs that held it out';
    rows.push(r);
  }
  rows.push(row('runs that trained on it', String(A.n_in[i])),
            row('runs that held it out', String(A.n_out[i])));
  COLS.forEach(c => {
    const v = A['col_' + c.key][i];
    const se = c.has_se ? A['se_' + c.key][i] : NaN;
    const rank = suspicionOrder(c.key).indexOf(i) + 1;
    rows.push(h('tr', {'data-key': c.key}, h('th', {scope: 'row'}, c.label),
      h('td', null, h('span', {class: 'value'}, exact(v)),
        defined(se) ? ' \u00b1 ' + fmt(se) : '',
        h('span', {class: 'rank'}, defined(v) ? ' (suspicion rank ' + rank +
          ' of ' + N + ')' : ''))));
  });
  rows.push(row('mean suspicion rank', A.mean_rank[i].toFixed(1)));
  const pairs = [];
  for (let p = 0; p < A.pair_tr.length; p++) {
    if (A.pair_tr[p] === i) pairs.push(p);
  }
  pairs.sort((a, b) => A.pair_infl[b] - A.pair_infl[a] ||
    A.pair_tt[a] - A.pair_tt[b]);
  return [h('h2', {id: 'card-title'}, 'Training example #' + i),
    h('div', {class: 'card-main'}, thumb('train', i, true),
      h('table', {class: 'values'}, h('tbody', null, rows))),
    pairs.length ? [h('h3', null, 'Test examples it influences'),
      h('div', {class: 'grid inline', onkeydown: gridKeys},
        pairs.map(p => testTile(A.pair_tt[p], h('span', {class: 'tv',
          title: exact(A.pair_infl[p])}, 'infl ' + fmt(A.pair_infl[p])))))]
      : null];
}
function testCard(j) {
  const pairs = [];
  for (let p = 0; p < A.pair_tt.length; p++) {
    if (A.pair_tt[p] === j) pairs.push(p);
  }
  pairs.sort((a, b) => A.pair_infl[b] - A.pair_infl[a] ||
    A.pair_tr[a] - A.pair_tr[b]);
  const c = A.test_labels ? A.test_labels[j] : -1;
  return [h('h2', {id: 'card-title'}, 'Test example #' + j),
    h('div', {class: 'card-main'}, thumb('test', j, true),
      h('table', {class: 'values'}, h('tbody', null,
        row('label', cname(c)),
        row('runs right on it', A.test_correct[j] + ' of ' +
          META.provenance.num_runs)))),
    influencers(j),
    pairs.length ? [h('h3', null, 'High-influence pairs: training ' +
      'examples that influence it'),
      h('div', {class: 'grid inline', onkeydown: gridKeys},
        pairs.map(p => trainTile(A.pair_tr[p], null, h('span',
          {class: 'tv', title: exact(A.pair_infl[p])},
          'infl ' + fmt(A.pair_infl[p])))))] :
      h('p', {class: 'note'}, 'No high-influence pair involves it.')];
}
function route() {
  const m = /^#(train|test)\/(\d+)$/.exec(location.hash);
  const overlay = document.getElementById('card');
  const box = overlay.querySelector('.card-body');
  if (!m) {
    if (!overlay.hidden) {
      overlay.hidden = true;
      if (returnFocus) returnFocus.focus();
    }
    return;
  }
  const split = m[1], i = parseInt(m[2], 10), n = split === 'train' ? N : NT;
  clear(box);
  if (i >= n) {
    add(box, [h('h2', {id: 'card-title'}, 'No ' + split + ' example #' + i),
      h('p', null, 'The ' + split + ' set has ' + n + ' examples (0 to ' +
        (n - 1) + ').')]);
  } else {
    add(box, split === 'train' ? trainCard(i) : testCard(i));
  }
  if (overlay.hidden) returnFocus = document.activeElement;
  overlay.hidden = false;
  overlay.querySelector('.close').focus();
}
function closeCard() {
  if (/^#(train|test)\//.test(location.hash)) {
    // A new history entry without the card (Back reopens it), no scroll.
    history.pushState(null, '', location.pathname + location.search);
    route();
  }
}
function trapFocus(ev) {  // Tab stays inside the open card.
  const overlay = document.getElementById('card');
  if (ev.key !== 'Tab' || overlay.hidden) return;
  const all = Array.from(overlay.querySelectorAll('a[href], button'));
  const first = all[0], last = all[all.length - 1];
  if (ev.shiftKey && document.activeElement === first) {
    ev.preventDefault(); last.focus();
  } else if (!ev.shiftKey && document.activeElement === last) {
    ev.preventDefault(); first.focus();
  } else if (!overlay.contains(document.activeElement)) {
    ev.preventDefault(); first.focus();
  }
}

// ---------------------------------------------------------------- search --
function search(ev) {
  ev.preventDefault();
  const q = document.getElementById('search-input').value.trim();
  const status = document.getElementById('search-status');
  status.textContent = '';
  let m = /^(train|test)?\s*[#\/ ]?\s*(\d+)$/i.exec(q);
  if (m) {
    location.hash = '#' + (m[1] ? m[1].toLowerCase() : 'train') + '/' + m[2];
    return;
  }
  m = /^class\s+(.+)$/i.exec(q);
  const name = (m ? m[1] : q).toLowerCase();
  const names = META.class_names || [];
  const c = names.findIndex(n => n.toLowerCase() === name);
  if (c >= 0 && A.labels) {
    st.cls = c; st.shown = PAGE;
    document.getElementById('class').value = c;
    update();
    document.getElementById('explore').scrollIntoView();
    status.textContent = 'class ' + names[c] + ': ' + current.length +
      ' examples';
    return;
  }
  status.textContent = 'Nothing matches \u201c' + q + '\u201d: try train 12, ' +
    'test 3 or class ' + (names[0] || '0');
}

// ------------------------------------------------------------------ main --
// Each <section id=KEY> of the page (heldout_tf.report.page.SECTIONS) is
// drawn by DRAW[KEY](its body element), in page order.
const DRAW = {
  provenance: drawProvenance,
  summary: drawSummary,
  explore: el => { drawExploreFrame(el); update(); },
  pairs: drawPairsFrame,
  attribution: drawAttribution,
  suspicious: drawSuspiciousFrame,
  downloads: drawDownloads,
};
async function main() {
  const status = document.getElementById('status');
  if (typeof DecompressionStream === 'undefined') {
    status.textContent = 'This browser is too old for this report ' +
      '(it needs DecompressionStream: Chrome 80, Firefox 113, Safari 16.4).';
    return;
  }
  await loadArrays();
  setupHistograms();
  document.querySelectorAll('main > section').forEach(section => {
    const draw = DRAW[section.id];
    if (!draw) throw new Error('no drawing for section ' + section.id);
    draw(section.querySelector('.body'));
  });
  document.getElementById('search').addEventListener('submit', search);
  const overlay = document.getElementById('card');
  overlay.querySelector('.close').addEventListener('click', closeCard);
  overlay.addEventListener('click', ev => {
    if (ev.target === overlay) closeCard();
  });
  document.addEventListener('keydown', ev => {
    if (ev.key === 'Escape' && !overlay.hidden) closeCard();
    trapFocus(ev);
  });
  window.addEventListener('hashchange', route);
  route();
  const section = /^#[a-z]+$/.test(location.hash) &&
    document.getElementById(location.hash.slice(1));
  if (section) section.scrollIntoView();  // Now that it has its content.
  status.hidden = true;
  document.body.setAttribute('data-ready', Math.round(performance.now()));
}
main().catch(e => {
  document.getElementById('status').textContent =
    'The report could not be drawn: ' + e;
  throw e;
});
})();
