// Scenarios: per analysis with a renal mass, the surgical options side by side (partial, radical nephrectomy): each
// outcome's probability or predicted value with its 90 % interval, which masks they were computed from, and the
// research-use notice.
'use strict';

(function scenariosView(T) {
  const SCENARIO_NAMES = { partial_nephrectomy: 'Partial nephrectomy', radical_nephrectomy: 'Radical nephrectomy' };
  const TARGET_NAMES = {
    any_complication: 'Any complication',
    major_complication: 'Major complication (Clavien-Dindo ≥ III)',
    prolonged_stay: 'Prolonged hospital stay',
    egfr_decline: 'eGFR decline',
    new_baseline_egfr: 'New-baseline eGFR',
  };

  function cell(prediction) {
    if (!prediction) return T.el('td', { class: 'muted', text: '–' });
    const [low, high] = prediction.interval_90 || [null, null];
    const percent = (v) => `${T.formatNumber(100 * v, 0)} %`;
    if (prediction.probability !== null && prediction.probability !== undefined) {
      return T.el('td', {}, T.el('strong', { text: percent(prediction.probability) }),
        low !== null && high !== null ? T.el('span', { class: 'muted', text: ` (90 %: ${percent(low)}–${percent(high)})` }) : null);
    }
    const unit = prediction.unit ? ` ${T.unitText(prediction.unit)}` : '';
    return T.el('td', {}, T.el('strong', { text: `${T.formatNumber(prediction.value, 0)}${unit}` }),
      low !== null && high !== null
        ? T.el('span', { class: 'muted', text: ` (90 %: ${T.formatNumber(low, 0)}–${T.formatNumber(high, 0)})` }) : null);
  }

  function sourceText(source) {
    return source === 'model' ? "the model's masks (research model; renal masses need a reader's review)"
      : "a radiologist's segmentation";
  }

  T.renderScenarios = function renderScenarios(answer, summary) {
    const box = document.getElementById('scenario-list');
    box.replaceChildren();
    const dates = new Map(summary.studies.map((s) => [s.study_instance_uid, s.study_date]));
    const analyses = new Map(summary.analyses.map((a) => [a.analysis_id, a]));
    if (!answer.analyses.length) {
      box.append(T.el('p', { class: 'muted', text: 'No surgical scenarios: no analysis of this patient found a renal '
        + 'mass with the inputs the outcome models need.' }));
      return;
    }
    for (const item of answer.analyses) {
      const analysis = analyses.get(item.analysis_id);
      const scenarios = [...new Set(item.predictions.map((p) => p.scenario))].sort();
      const targets = [...new Set(item.predictions.map((p) => p.target))];
      const find = (target, scenario) => item.predictions.find((p) => p.target === target && p.scenario === scenario);
      const table = T.el('table', { class: 'numbers scenarios', 'data-analysis': item.analysis_id },
        T.el('thead', {}, T.el('tr', {}, T.el('th', { text: 'Outcome' }),
          ...scenarios.map((s) => T.el('th', { text: SCENARIO_NAMES[s] || T.humanName(s) })))),
        T.el('tbody', {}, ...targets.map((target) => T.el('tr', {},
          T.el('th', { text: TARGET_NAMES[target] || T.humanName(target) }),
          ...scenarios.map((s) => cell(find(target, s)))))));
      const day = analysis ? dates.get(analysis.study_instance_uid) : null;
      box.append(T.el('section', { class: 'scenario' },
        T.el('h3', { text: `Study of ${day || 'unknown date'}` }),
        T.el('p', { class: 'hint', text: `Computed from ${sourceText(item.mask_source)}; `
          + `models ${[...new Set(item.predictions.map((p) => p.model))].join(', ')}.` }),
        table,
        T.el('p', { class: 'notice small', text: 'Research use only: outcome models trained on KiTS23 (one US centre); '
          + 'probabilities and intervals are estimates for discussion, not a decision.' })));
    }
  };
})(window.TwinPage);
