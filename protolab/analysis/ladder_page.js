/* The ladder page's script (protolab.analysis.ladder_html). It reads the ladder from the JSON
   block and draws only the rows in view, and a few around them (virtual scrolling): the canvas is
   as tall as all the rows, the rows in view are rebuilt when the scroll passes a row boundary.
   Text from the capture only ever reaches the page as textContent or an attribute value. */
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const data = JSON.parse($("ladder-data").textContent);
  const arrows = data.arrows;
  const lanes = data.lifelines;
  const holderIndex = new Map(data.holders.map((h, i) => [h, i]));
  const ROW = 36;  // px, as --row in the sheet
  const OVERSCAN = 12;  // rows drawn above and below the view
  const HEAD = 8;  // arrowhead length
  const split = (key) => {  // "127.0.0.1:5353" → ["127.0.0.1", ":5353"]; a bare host → [host, ""]
    const m = /^(\[.*\]|[^:]*)(:\d+)$/.exec(key);  // IPv6 only in brackets
    return m ? [m[1], m[2]] : [key, ""];
  };
  const widest = lanes.reduce((w, l) => {
    const [host, port] = split(l.label);
    return Math.max(w, host.length * 6.4, port.length * 7.6);
  }, 60);
  const PREFERRED = Math.round(Math.max(96, Math.min(220, widest + 22)));
  const GUT = 72, MIN_NOTE = 300;  // px, as --gut and --note in the sheet
  let COL = PREFERRED, WIDTH = COL;  // a lifeline's column, all of them: set by layout()
  const SVG = "http://www.w3.org/2000/svg";
  const scroller = $("scroller"), head = $("head"), canvas = $("canvas"), rowsEl = $("rows");
  const detail = $("detail"), filterBox = $("filter"), count = $("count");
  const hint = detail.firstElementChild;
  const all = arrows.map((_, i) => i);
  let shown = all;  // indices of the arrows the filter lets through, in capture order
  let selected = -1;  // the arrow pinned in the detail pane
  let inDetail = -1;
  let drawn = [-1, -1];
  let hay = null;  // lower-case text per arrow, made on the first filter
  let byNumber = null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  }
  const slug = (s) => s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
  const holderClass = (h) => "h" + (holderIndex.has(h) ? holderIndex.get(h) : holderIndex.get("nobody"));
  const mainHolder = (a) => (a.holders.length ? a.holders[0] : "nobody");
  const cx = (lane) => lane * COL + COL / 2;
  const tag = (mark) => el("span", "tag t-" + slug(mark), mark);

  // Columns as wide as the labels want (a few lifelines share 480 px at least), narrower (down
  // to 68 px) when that lets the lifelines and the notes fit beside each other; wider captures
  // scroll sideways under the notes.
  function layout() {
    const fit = Math.floor((scroller.clientWidth - GUT - MIN_NOTE) / Math.max(lanes.length, 1));
    const col = Math.round(Math.max(68, Math.min(Math.max(PREFERRED, 480 / lanes.length), fit)));
    if (col === COL && head.childElementCount) return false;
    COL = col;
    WIDTH = Math.max(lanes.length * COL, COL);
    scroller.style.setProperty("--col", COL + "px");
    buildHead();
    return true;
  }

  function buildHead() {
    const gut = el("div", "gut");
    gut.append(el("span", "n", "#"), el("span", "t", "time (s)"));
    const box = el("div", "lanes");
    box.style.width = WIDTH + "px";
    lanes.forEach((ln, i) => {
      const [host, port] = split(ln.label);
      const b = el("div", port ? "lane" : "lane bare");
      b.append(el("span", "host", host), el("span", "port", port));
      b.title = ln.key;
      b.dataset.key = ln.key;
      b.style.left = i * COL + 3 + "px";
      b.style.width = COL - 6 + "px";
      box.append(b);
    });
    const note = el("div", "note");
    note.append(el("span", "txt", "where state lives — coloured by who holds it"));
    head.replaceChildren(gut, box, note);
  }

  function appendNote(box, a) {
    const prefix = a.action + ":";
    if (a.action !== "none" && a.note.startsWith(prefix)) {
      box.append(el("b", "", prefix), a.note.slice(prefix.length));
    } else {
      box.append(a.note);
    }
  }

  function label(a, left, width, self) {
    const lab = el("div", self ? "label self" : "label");
    for (const m of a.marks) lab.append(tag(m));
    lab.append(a.summary);
    lab.style.left = left + "px";
    lab.style.width = width + "px";
    return lab;
  }

  function selfLoop(box, a) {
    const x = cx(a.src);
    const s = svg("svg", { class: "arrow", width: 40, height: ROW, viewBox: `${x - 4} 0 40 ${ROW}` });
    s.style.left = x - 4 + "px";
    s.append(svg("path", { class: "shaft", d: `M${x},13 h24 v13 h-${24 - HEAD}` }));
    s.append(svg("path", { class: "head", d: `M${x},26 l${HEAD},-4.5 v9 z` }));
    box.append(s, label(a, x + 32, Math.min(2 * COL, WIDTH - x - 34), true));
  }

  function drawArrow(box, a) {
    if (a.src === a.dst) return selfLoop(box, a);
    const x1 = cx(a.src), x2 = cx(a.dst), y = 26;
    const dir = x2 > x1 ? 1 : -1;
    const left = Math.min(x1, x2) - 10, span = Math.abs(x2 - x1) + 20;
    const s = svg("svg", { class: "arrow", width: span, height: ROW, viewBox: `${left} 0 ${span} ${ROW}` });
    s.style.left = left + "px";
    if (a.marks.includes("dropped")) {  // it stops short of the receiver, in an X
      const xe = x2 - dir * 14;
      s.append(svg("line", { class: "shaft", x1, y1: y, x2: xe, y2: y }));
      s.append(svg("path", { class: "xmark", d: `M${xe - 5},${y - 5} l10,10 m0,-10 l-10,10` }));
    } else {
      s.append(svg("line", { class: "shaft", x1, y1: y, x2: x2 - dir * HEAD, y2: y }));
      s.append(svg("path", { class: "head", d: `M${x2},${y} l${-dir * HEAD},-4.5 v9 z` }));
    }
    const width = Math.min(Math.max(span - 24, 280), WIDTH - 4);
    const at = Math.min(Math.max((x1 + x2) / 2 - width / 2, 2), WIDTH - width - 2);
    box.append(s, label(a, at, width, false));
  }

  function noteCell(a) {
    const note = el("div", "note " + holderClass(mainHolder(a)));
    const txt = el("div", "txt");
    if (a.holders.length > 1) {
      for (const h of a.holders) {
        const dot = el("span", "dot " + holderClass(h));
        dot.title = h;
        txt.append(dot);
      }
    }
    appendNote(txt, a);
    note.append(txt);
    note.title = (a.holders.join(", ") || "nobody") + ": " + a.note;
    return note;
  }

  function row(i) {
    const a = arrows[i];
    const r = el("div", ["pkt", holderClass(mainHolder(a)), ...a.marks.map((m) => "m-" + slug(m))].join(" "));
    if (i === selected) r.classList.add("sel");
    r.id = "p" + a.n;
    r.dataset.n = a.n;
    r.dataset.i = i;
    r.dataset.src = lanes[a.src].key;
    r.dataset.dst = lanes[a.dst].key;
    r.dataset.marks = a.marks.join(",");
    const gut = el("div", "gut");
    gut.append(el("span", "n", String(a.n)), el("span", "t", a.t.toFixed(3)));
    const box = el("div", "lanes");
    box.style.width = WIDTH + "px";
    drawArrow(box, a);
    r.append(gut, box, noteCell(a));
    return r;
  }

  // The rows from first to last of the filtered list; rows still in range are kept as they
  // are (only a new filter or new column widths, `force`, draws them all again).
  let live = new Map();  // arrow index → its drawn row
  function render(force) {
    const top = scroller.scrollTop, height = scroller.clientHeight;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(shown.length, Math.ceil((top + height) / ROW) + OVERSCAN);
    if (!force && first === drawn[0] && last === drawn[1]) return;
    drawn = [first, last];
    const kept = force ? new Map() : live;
    live = new Map();
    for (let k = first; k < last; k++) live.set(shown[k], kept.get(shown[k]) || row(shown[k]));
    rowsEl.replaceChildren(...live.values());
    rowsEl.style.transform = `translateY(${first * ROW}px)`;
  }

  function fieldValue(v) {
    return v !== null && typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  function link(text, key, value) {
    const a = el("a", "", text);
    a.dataset[key] = value;
    a.tabIndex = 0;
    return a;
  }

  function show(i) {
    if (i === inDetail) return;
    inDetail = i;
    if (i < 0) return detail.replaceChildren(hint);
    const a = arrows[i];
    const h2 = el("h2", "", "Packet #" + a.n);
    h2.append(el("span", "t", a.t.toFixed(6) + " s"));
    const route = el("p", "route", `${lanes[a.src].key} → ${lanes[a.dst].key}`);
    const meta = el("p", "", a.proto);
    if (a.flow) meta.append(" · flow ", el("code", "", a.flow), " ", link("only this flow", "flow", a.flow));
    const summary = el("p", "summary");
    for (const m of a.marks) summary.append(tag(m));
    summary.append(a.summary);
    const note = el("div", "note " + holderClass(mainHolder(a)));
    appendNote(note, a);
    const held = el("p", "", "held by: ");
    for (const h of a.holders.length ? a.holders : ["nobody"]) held.append(el("span", "chip " + holderClass(h), h));
    const fact = el("p", "", `fact: ${a.kind} · action: ${a.action}`);
    if (a.refs.length) {
      fact.append(" · names ");
      a.refs.forEach((n, k) => fact.append(k ? ", " : "", link("#" + n, "ref", n)));
    }
    const table = el("table");
    for (const [k, v] of Object.entries(a.fields)) {
      const tr = el("tr");
      tr.append(el("th", "", k), el("td", "", fieldValue(v)));
      table.append(tr);
    }
    detail.replaceChildren(h2, route, meta, summary, note, held, fact, table);
  }

  function markSelected() {
    for (const r of rowsEl.children) r.classList.toggle("sel", Number(r.dataset.i) === selected);
  }

  function reveal(pos) {
    const top = scroller.scrollTop, height = scroller.clientHeight - head.offsetHeight;
    const y = pos * ROW;
    if (y < top) scroller.scrollTop = y;
    else if (y + ROW > top + height) scroller.scrollTop = y + ROW - height;
  }

  function select(i) {
    selected = i;
    inDetail = -2;
    show(i);
    markSelected();
  }

  function goTo(n) {
    byNumber = byNumber || new Map(arrows.map((a, i) => [a.n, i]));
    const i = byNumber.get(n);
    if (i === undefined) return;
    if (!shown.includes(i)) setFilter("");
    const pos = shown.indexOf(i);
    scroller.scrollTop = Math.max(0, pos * ROW - scroller.clientHeight / 3);
    render(false);
    select(i);
  }

  function step(delta) {
    if (!shown.length) return;
    const pos = shown.indexOf(selected);
    const next = pos < 0 ? 0 : Math.min(shown.length - 1, Math.max(0, pos + delta));
    reveal(next);
    render(false);
    select(shown[next]);
  }

  const haystack = (a) => [a.summary, a.note, a.flow, a.proto, a.marks.join(" ")].join("\n").toLowerCase();

  // Words (all must match) in summary, note, flow, proto and marks; "a phrase"; #N, a packet;
  // flow:"tcp 2", proto:dns, mark:dropped, holder:"client kernel".
  function tests(query) {
    const found = [];
    const words = /([a-z]+:)?(?:"([^"]*)"?|(\S+))/gi;
    let m;
    while ((m = words.exec(query)) !== null) {
      const key = (m[1] || "").slice(0, -1).toLowerCase();
      const value = (m[2] !== undefined ? m[2] : m[3] || "").toLowerCase();
      if (key === "flow") found.push((a) => a.flow.toLowerCase() === value);
      else if (key === "proto") found.push((a) => a.proto.toLowerCase() === value);
      else if (key === "mark") found.push((a) => a.marks.some((x) => x.toLowerCase().includes(value)));
      else if (key === "holder") found.push((a) => a.holders.some((x) => x.toLowerCase().includes(value)));
      else if (!key && /^#\d+$/.test(value)) found.push((a) => a.n === Number(value.slice(1)));
      else {
        const text = (m[1] || "").toLowerCase() + value;
        if (text) found.push((a, i) => hay[i].includes(text));
      }
    }
    return found;
  }

  function applyFilter() {
    const query = filterBox.value.trim();
    if (!query) {
      shown = all;
    } else {
      hay = hay || arrows.map(haystack);
      const checks = tests(query);
      shown = all.filter((i) => checks.every((t) => t(arrows[i], i)));
    }
    const total = arrows.length.toLocaleString("en");
    count.textContent = query ? `${shown.length.toLocaleString("en")} of ${total} packets` : `${total} packets`;
    count.dataset.shown = shown.length;
    count.dataset.query = query;
    canvas.style.height = shown.length * ROW + "px";
    empty.hidden = shown.length > 0;
    const pos = shown.indexOf(selected);
    scroller.scrollTop = pos < 0 ? 0 : Math.max(0, pos * ROW - scroller.clientHeight / 3);
    render(true);
  }

  function setFilter(text) {
    filterBox.value = text;
    applyFilter();
  }

  let pending = 0;
  filterBox.addEventListener("input", () => {
    clearTimeout(pending);
    pending = setTimeout(applyFilter, arrows.length > 3000 ? 150 : 0);
  });
  filterBox.addEventListener("keydown", (e) => {
    if (e.key === "Escape") setFilter("");
    if (e.key === "Enter") { clearTimeout(pending); applyFilter(); scroller.focus(); }
  });
  scroller.addEventListener("scroll", () => render(false), { passive: true });
  window.addEventListener("resize", () => render(layout()));
  rowsEl.addEventListener("click", (e) => {
    const p = e.target.closest(".pkt");
    if (p) { select(Number(p.dataset.i)); scroller.focus({ preventScroll: true }); }
  });
  rowsEl.addEventListener("mouseover", (e) => {
    const p = e.target.closest(".pkt");
    if (p) show(Number(p.dataset.i));
  });
  scroller.addEventListener("mouseleave", () => show(selected));
  scroller.addEventListener("keydown", (e) => {
    const moves = { ArrowDown: 1, ArrowUp: -1, j: 1, k: -1, PageDown: 20, PageUp: -20 };
    if (e.key in moves) { e.preventDefault(); step(moves[e.key]); }
  });
  detail.addEventListener("click", (e) => {
    const ref = e.target.closest("a[data-ref]");
    if (ref) goTo(Number(ref.dataset.ref));
    const flow = e.target.closest("a[data-flow]");
    if (flow) setFilter(`flow:"${flow.dataset.flow}"`);
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && document.activeElement !== filterBox) { e.preventDefault(); filterBox.focus(); }
  });

  const empty = el("p", "empty", arrows.length ? "No packet matches the filter." : "No packets to draw.");
  canvas.append(empty);
  layout();
  applyFilter();
  requestAnimationFrame(() => setTimeout(() => {  // after the first rows are painted
    document.documentElement.dataset.renderedMs = performance.now().toFixed(1);
    window.ladderReady = true;
  }, 0));
})();
