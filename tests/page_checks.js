// Layout and accessibility checks run in the page (tests/test_layout_browser.py).
// The width asked for: a mobile layout viewport widens to fit content that overflows.
const vw = arguments[0];
const out = {scrollWidth: document.documentElement.scrollWidth, vw: vw, wide: [],
             unlabelled: [], headings: [], unnamedImages: [], lowContrast: []};
for (const el of document.body.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  let clipped = false;
  for (let p = el.parentElement; p; p = p.parentElement) {
    const o = getComputedStyle(p).overflowX;
    if (o === 'auto' || o === 'scroll' || o === 'hidden') { clipped = true; break; }
  }
  if (!clipped && r.width > 0 && r.right > vw + 1) out.wide.push(el.tagName + '.' + el.className);
}
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (el.type === 'hidden') continue;
  const named = el.labels && el.labels.length > 0 || el.getAttribute('aria-label');
  if (!named) out.unlabelled.push(el.outerHTML.slice(0, 80));
}
for (const h of document.querySelectorAll('h1, h2, h3, h4, h5, h6')) out.headings.push(+h.tagName[1]);
for (const el of document.querySelectorAll('svg[role=img], img')) {
  let name = el.getAttribute('aria-label') || el.getAttribute('alt') || '';
  const ids = el.getAttribute('aria-labelledby');
  if (ids) name += ids.split(' ').map(i => (document.getElementById(i) || {}).textContent || '').join(' ');
  if (!name.trim()) out.unnamedImages.push(el.outerHTML.slice(0, 80));
}
function rgb(c) { const m = c.match(/[\d.]+/g).map(Number); return m.length > 3 && m[3] === 0 ? null : m; }
function lum(c) {
  const [r, g, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
for (const el of document.body.querySelectorAll('p, a, li, td, th, label, small, span, h1, h2, h3, button, time, caption, figcaption')) {
  if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
  const s = getComputedStyle(el);
  if (s.visibility === 'hidden' || s.display === 'none') continue;
  let bg = null;
  for (let p = el; p && !bg; p = p.parentElement) bg = rgb(getComputedStyle(p).backgroundColor);
  const fg = rgb(s.color), back = bg || [255, 255, 255];
  const [hi, lo] = [lum(fg), lum(back)].sort((a, b) => b - a);
  const ratio = (hi + 0.05) / (lo + 0.05);
  if (ratio < 4.5) out.lowContrast.push(el.tagName + ' ' + ratio.toFixed(2) + ' ' + el.textContent.trim().slice(0, 30));
}
return out;
