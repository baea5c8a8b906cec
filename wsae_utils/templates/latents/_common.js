"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const VOCAB = DATA.vocab || [];
function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function tokText(s) { return esc(s).replace(/\n/g, "\u21b5"); }
// One window: tokens shaded by activation / scale (the latent's largest activation), its peak token outlined.
// Silent tokens stay plain text (no element each): a 100-latent page then builds a tenth of the nodes.
function windowHTML(win, scale, showValues) {
  let peak = -1, best = 0;
  win.a.forEach((a, i) => { if (a > best) { best = a; peak = i; } });
  let h = "";
  for (let i = 0; i < win.t.length; i++) {
    const a = win.a[i];
    if (!(a > 0)) { h += tokText(VOCAB[win.t[i]]); continue; }
    const cls = i === peak ? "tok max" : "tok";
    const title = showValues ? ` title="${a}"` : "";
    h += `<span class="${cls}" style="background:rgba(255,140,0,${Math.min(1, 0.12 + 0.88 * a / scale).toFixed(2)})"${title}>${tokText(VOCAB[win.t[i]])}</span>`;
  }
  return `<div class="win">${h}</div>`;
}
function histSVG(hist) {
  const w = 220, h = 60, n = hist.counts.length, m = Math.max(1, ...hist.counts);
  let bars = "";
  hist.counts.forEach((c, i) => {
    const bh = Math.round(h * c / m);
    bars += `<rect x="${(i * w / n).toFixed(1)}" y="${h - bh}" width="${(w / n - 1).toFixed(1)}" height="${bh}" fill="#e8913a"><title>${hist.edges[i]}\u2013${hist.edges[i + 1]}: ${c}</title></rect>`;
  });
  return `<svg width="${w}" height="${h + 14}" role="img" aria-label="activation histogram">${bars}` +
    `<text x="0" y="${h + 12}" font-size="10">0</text><text x="${w}" y="${h + 12}" font-size="10" text-anchor="end">${hist.edges[n]}</text></svg>`;
}
function logitTable(lg, n) {
  if (!lg || !lg.up) return `<p class="muted">no logit effects stored</p>`;
  let r = "";
  for (let i = 0; i < Math.min(n, lg.up.length); i++) {
    r += `<tr><td class="up">${tokText(lg.up[i][0])}</td><td class="up">+${lg.up[i][1]}</td>` +
      `<td class="down">${tokText(lg.down[i][0])}</td><td class="down">${lg.down[i][1]}</td></tr>`;
  }
  return `<table class="lg"><tr><th colspan="2">raises</th><th colspan="2">lowers</th></tr>${r}</table>`;
}
// Tokens a search can find in a card: where the latent fires, and the tokens its decoder raises.
function searchText(card) {
  const parts = [];
  const wins = (card.top || []).concat(...(card.bands || []).map(b => b.wins));
  wins.forEach(w => w.t.forEach((t, i) => { if (w.a[i] > 0) parts.push(VOCAB[t]); }));
  if (card.logits && card.logits.up) card.logits.up.forEach(x => parts.push(x[0]));
  if (card.expl) Object.values(card.expl).forEach(x => parts.push(String(x)));
  return parts.join("\u0001").toLowerCase();
}
function pct(x) { return (100 * x).toPrecision(3) + " %"; }
