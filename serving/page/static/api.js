// The page's calls to the service: the API's own routes with the session cookie (HttpOnly, set at sign-in) and the
// X-Twin-Page header the server asks of cookie-borne requests. Shared helpers for the views.
'use strict';

const TwinPage = (window.TwinPage = {});

class PageError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}
TwinPage.PageError = PageError;

TwinPage.onSignedOut = () => {};

TwinPage.call = async function call(path, body, { method = 'POST', headers = {} } = {}) {
  const response = await fetch(path, {
    method,
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { 'X-Twin-Page': '1', ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = (await response.json()).error || message;
    } catch (ignored) { /* not JSON */ }
    if (response.status === 401 && path !== '/page/session') TwinPage.onSignedOut(message);
    throw new PageError(response.status, message);
  }
  return response;
};

TwinPage.json = async (path, body) => (await TwinPage.call(path, body)).json();

TwinPage.artifact = async (analysisId, kind, name) =>
  (await TwinPage.call('/v1/artifacts/download', { analysis_id: analysisId, kind, ...(name ? { name } : {}) }))
    .arrayBuffer();

// --- small DOM helpers (text only: nothing the server sends is ever parsed as HTML) ---------------------------
TwinPage.el = function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
};

TwinPage.svg = function svg(tag, attributes = {}) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
};

TwinPage.formatDate = (iso) => (iso ? String(iso).slice(0, 10) : '');

TwinPage.formatNumber = (value, digits = 1) =>
  value === null || value === undefined || Number.isNaN(value) ? '–' : Number(value).toFixed(digits);

// UCUM as a clinician reads it: "mL/min/{1.73_m2}" → "mL/min/1.73 m²".
TwinPage.unitText = (unit) => String(unit || '').replace('{1.73_m2}', '1.73 m²').replace(/m2\b/, 'm²');

TwinPage.rgb = (color) => (color ? `rgb(${color[0]}, ${color[1]}, ${color[2]})` : 'rgb(170, 170, 170)');

// "kidney_left" → "Kidney left" where the analysis gives no display name.
TwinPage.humanName = (name) => {
  const text = String(name || '').replace(/_/g, ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
};

// The display name and colour of each structure of an analysis, from its results document (cached per analysis).
const structureCache = new Map();
TwinPage.structuresOf = async function structuresOf(analysisId) {
  if (!structureCache.has(analysisId)) {
    const buffer = await TwinPage.artifact(analysisId, 'results_json');
    const document_ = JSON.parse(new TextDecoder().decode(buffer));
    structureCache.set(
      analysisId,
      document_.structures.map((s) => ({
        name: s.name,
        label: s.label,
        display: s.display_name || TwinPage.humanName(s.name),
        color: s.color_rgb || null,
        volumeMl: s.volume_ml,
      })),
    );
  }
  return structureCache.get(analysisId);
};

TwinPage.clearCaches = () => structureCache.clear();
