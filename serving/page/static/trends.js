// Trends: each structure's volume over time (and each observation such as eGFR) as a small SVG chart with the
// procedure dates marked; and the comparison of two studies as a table.
// The charts are drawn as plain SVG rather than with a charting library: a handful of points per chart, a date
// axis and vertical procedure marks are all that is needed, and SVG leaves every point and mark in the page
// (readable by assistive technology and by the tests) where a canvas library would leave pixels.
'use strict';

(function trendsView(T) {
  const WIDTH = 300;
  const HEIGHT = 150;
  const PAD = { left: 46, right: 12, top: 24, bottom: 28 };
  const DAY_MS = 86400000;

  function studyDates(summary) {
    return new Map(summary.studies.map((s) => [s.study_instance_uid, s.study_date]));
  }

  // The analyses a trend may join: completed, not superseded, and measured by the most recent analysis' model
  // (volumes of two models are not one series).
  T.trendAnalyses = function trendAnalyses(summary) {
    const usable = summary.analyses.filter((a) => a.status === 'completed' && !a.superseded_by);
    if (!usable.length) return { analyses: [], model: null };
    const latest = usable.reduce((a, b) => (a.started_at > b.started_at ? a : b));
    return {
      analyses: usable.filter((a) => a.model_id === latest.model_id && a.model_version === latest.model_version),
      model: { id: latest.model_id, version: latest.model_version },
    };
  };

  function chart({ title, unit, series, procedures, key, color }) {
    const times = [...series.map((p) => p.t), ...procedures.map((p) => p.t)];
    let t0 = Math.min(...times);
    let t1 = Math.max(...times);
    if (t1 - t0 < DAY_MS) { t0 -= 15 * DAY_MS; t1 += 15 * DAY_MS; }
    const values = series.map((p) => p.v);
    let v0 = Math.min(...values);
    let v1 = Math.max(...values);
    const margin = Math.max((v1 - v0) * 0.15, Math.abs(v1) * 0.05, 1e-6);
    v0 -= margin; v1 += margin;
    const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (WIDTH - PAD.left - PAD.right);
    const y = (v) => HEIGHT - PAD.bottom - ((v - v0) / (v1 - v0)) * (HEIGHT - PAD.top - PAD.bottom);
    const svg = T.svg('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: 'trend', 'data-series': key, role: 'img',
      'aria-label': `${title} over time` });
    const heading = T.svg('text', { x: PAD.left, y: 14, class: 'chart-title' });
    heading.textContent = `${title} (${T.unitText(unit)})`;
    svg.append(heading);
    svg.append(T.svg('line', { x1: PAD.left, y1: HEIGHT - PAD.bottom, x2: WIDTH - PAD.right, y2: HEIGHT - PAD.bottom,
      class: 'axis' }));
    const digits = (value) => (Math.abs(value) >= 100 ? 0 : 1);
    const ticks = [v1 - margin];  // the highest value, and the lowest where it reads apart from it
    if (y(v0 + margin) - y(v1 - margin) >= 12) ticks.push(v0 + margin);
    for (const value of ticks) {
      const tick = T.svg('text', { x: PAD.left - 4, y: y(value) + 4, class: 'tick', 'text-anchor': 'end' });
      tick.textContent = T.formatNumber(value, digits(value));
      svg.append(tick);
    }
    for (const [t, anchor] of [[t0, 'start'], [t1, 'end']]) {
      const tick = T.svg('text', { x: x(t), y: HEIGHT - 8, class: 'tick', 'text-anchor': anchor });
      tick.textContent = new Date(t).toISOString().slice(0, 10);
      svg.append(tick);
    }
    for (const procedure of procedures) {
      const mark = T.svg('line', { x1: x(procedure.t), x2: x(procedure.t), y1: PAD.top, y2: HEIGHT - PAD.bottom,
        class: 'procedure', 'data-date': procedure.day });
      const label = T.svg('title', {});
      label.textContent = `${procedure.display} (${procedure.day})`;
      mark.append(label);
      svg.append(mark);
    }
    const sorted = [...series].sort((a, b) => a.t - b.t);
    svg.append(T.svg('polyline', { points: sorted.map((p) => `${x(p.t)},${y(p.v)}`).join(' '), class: 'series',
      stroke: color }));
    for (const point of sorted) {
      const dot = T.svg('circle', { cx: x(point.t), cy: y(point.v), r: 4, class: 'point', fill: color,
        'data-structure': key, 'data-value': point.v });
      const label = T.svg('title', {});
      label.textContent = `${point.day}: ${T.formatNumber(point.v, 1)} ${T.unitText(unit)}`;
      dot.append(label);
      svg.append(dot);
    }
    return svg;
  }

  T.renderTrends = async function renderTrends(summary) {
    const box = document.getElementById('trend-charts');
    box.replaceChildren();
    const dates = studyDates(summary);
    const procedures = summary.procedures.map((p) => ({ t: Date.parse(p.performed_on), day: p.performed_on,
      display: p.display }));
    const { analyses, model } = T.trendAnalyses(summary);
    document.getElementById('trends-model').textContent = model
      ? `Volumes measured by ${model.id} ${model.version}; procedures are the dashed lines.`
      : 'No completed analysis yet.';
    const byStructure = new Map();
    for (const analysis of analyses) {
      const day = dates.get(analysis.study_instance_uid) || T.formatDate(analysis.started_at);
      for (const m of analysis.measurements) {
        if (!byStructure.has(m.structure)) byStructure.set(m.structure, []);
        byStructure.get(m.structure).push({ t: Date.parse(day), day, v: m.volume_ml });
      }
    }
    const legend = analyses.length ? await T.structuresOf(analyses[analyses.length - 1].analysis_id) : [];
    const look = new Map(legend.map((s) => [s.name, s]));
    T.trendNames = new Map(legend.map((s) => [s.name, s.display]));
    for (const [structure, series] of byStructure) {
      const known = look.get(structure);
      box.append(chart({ title: known ? known.display : T.humanName(structure), unit: 'mL', series, procedures,
        key: structure, color: T.rgb(known && known.color) }));
    }
    const byCode = new Map();
    for (const o of summary.observations) {
      if (!byCode.has(o.code)) byCode.set(o.code, { display: o.display, unit: o.unit, series: [] });
      byCode.get(o.code).series.push({ t: Date.parse(o.effective_at), day: T.formatDate(o.effective_at), v: o.value });
    }
    for (const [code, observation] of byCode) {
      box.append(chart({ title: observation.display, unit: observation.unit, series: observation.series, procedures,
        key: `observation:${code}`, color: 'rgb(60, 60, 60)' }));
    }
    fillStudyChoices(summary);
  };

  function fillStudyChoices(summary) {
    const studies = [...summary.studies].sort((a, b) => String(a.study_date).localeCompare(String(b.study_date)));
    for (const [id, pick] of [['study-a', 0], ['study-b', studies.length - 1]]) {
      const select = document.getElementById(id);
      select.replaceChildren(...studies.map((s) => T.el('option', { value: s.study_instance_uid,
        text: `${s.study_date || 'no date'} ${s.description || ''}`.trim() })));
      if (studies.length) select.selectedIndex = pick;
    }
    document.getElementById('compare-table').hidden = true;
  }

  T.compareStudies = async function compareStudies(patientId, summary) {
    const { model } = T.trendAnalyses(summary);
    const answer = await T.json('/v1/twin/compare', {
      patient_id: patientId,
      study_a: document.getElementById('study-a').value,
      study_b: document.getElementById('study-b').value,
      ...(model ? { model_id: model.id, model_version: model.version } : {}),
    });
    const table = document.getElementById('compare-table');
    const body = table.querySelector('tbody');
    body.replaceChildren(...answer.changes.map((c) => T.el('tr', { 'data-structure': c.structure },
      T.el('td', { text: (T.trendNames && T.trendNames.get(c.structure)) || T.humanName(c.structure) }),
      T.el('td', { text: T.formatNumber(c.volume_a_ml) }),
      T.el('td', { text: T.formatNumber(c.volume_b_ml) }),
      T.el('td', { text: T.formatNumber(c.change_ml) }),
      T.el('td', { text: T.formatNumber(c.change_percent) }))));
    table.hidden = false;
  };
})(window.TwinPage);
