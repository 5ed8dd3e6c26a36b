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

  const FEATURE_NAMES = {
    preop_egfr_ml_min_1_73m2: 'Pre-op eGFR (mL/min/1.73 m²)',
    radiographic_size_cm: 'Tumour size (cm)',
    charlson_count: 'Charlson comorbidities',
    bmi_kg_m2: 'BMI (kg/m²)',
    age_years: 'Age (years)',
    age_at_nephrectomy: 'Age (years)',
  };

  // "clinical.sex_female" = 1 → "Sex female: yes"; a measured feature keeps its value.
  function featureText(feature, value) {
    const name = String(feature).replace(/^[a-z]+\./, '');
    if (FEATURE_NAMES[name]) return `${FEATURE_NAMES[name]} = ${T.formatNumber(value, Math.abs(value) >= 10 ? 0 : 1)}`;
    if (value === 0 || value === 1) return `${T.humanName(name)}: ${value === 1 ? 'yes' : 'no'}`;
    return `${T.humanName(name)} = ${T.formatNumber(value, Math.abs(value) >= 10 ? 0 : 1)}`;
  }

  // The strongest contributions: what raised (▲) or lowered (▼) this probability against the training average.
  function drivers(prediction) {
    const strongest = (prediction.drivers || []).slice(0, 3);
    if (!strongest.length) return null;
    return T.el('ul', { class: 'drivers' }, ...strongest.map((d) => T.el('li', {
      class: d.logit >= 0 ? 'up' : 'down',
      text: `${d.logit >= 0 ? '▲' : '▼'} ${featureText(d.feature, d.value)}`,
    })));
  }

  function cell(prediction) {
    if (!prediction) return T.el('td', { class: 'muted', text: '–' });
    const [low, high] = prediction.interval_90 || [null, null];
    const percent = (v) => `${T.formatNumber(100 * v, 0)} %`;
    if (prediction.probability !== null && prediction.probability !== undefined) {
      return T.el('td', {}, T.el('strong', { text: percent(prediction.probability) }),
        low !== null && high !== null ? T.el('span', { class: 'muted', text: ` (90 %: ${percent(low)}–${percent(high)})` }) : null,
        drivers(prediction));
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
        item.imputed && item.imputed.length
          ? T.el('details', { class: 'hint imputed' },
            T.el('summary', { text: `${item.imputed.length} clinical inputs were not on the twin and were imputed `
              + '(post them as observations to use the real values)' }),
            T.el('ul', {}, ...item.imputed.map((i) => T.el('li', { text: i })))) : null,
        T.el('p', { class: 'notice small', text: 'Research use only: outcome models trained on KiTS23 (one US centre); '
          + 'probabilities and intervals are estimates for discussion, not a decision.' })));
    }
  };
})(window.TwinPage);
