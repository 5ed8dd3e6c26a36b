// Timeline: every dated event of the twin, oldest first, with each procedure drawn as the boundary between what
// came before (pre-operative) and after (post-operative) it.
'use strict';

(function timelineView(T) {
  const KIND_NAMES = {
    study: 'Study',
    analysis: 'Analysis',
    expert_segmentation: 'Radiologist segmentation',
    observation: 'Lab / observation',
    procedure: 'Procedure',
    prediction: 'Prediction',
    alert: 'Alert',
  };

  function analysisDetails(analysis) {
    if (!analysis) return null;
    const box = T.el('div', { class: 'details' });
    box.append(T.el('span', { class: 'model', text: `${analysis.model_id} ${analysis.model_version}` }));
    if (analysis.status !== 'completed') box.append(T.el('span', { class: 'flag', text: analysis.status }));
    if (analysis.superseded_by) box.append(T.el('span', { class: 'muted', text: ' superseded by a later analysis' }));
    if (analysis.review_required) {
      box.append(T.el('span', { class: 'flag review', text: 'Review required' }));
      const reasons = T.el('ul', { class: 'reasons' });
      for (const reason of analysis.review_reasons || []) reasons.append(T.el('li', { text: reason.message }));
      box.append(reasons);
    }
    return box;
  }

  T.renderTimeline = function renderTimeline(summary, events) {
    const body = document.getElementById('timeline-rows');
    body.replaceChildren();
    const analyses = new Map(summary.analyses.map((a) => [a.analysis_id, a]));
    const procedureDays = summary.procedures.map((p) => p.performed_on).sort();
    let phase = procedureDays.length ? 'pre' : null;
    if (!events.length) {
      body.append(T.el('tr', {}, T.el('td', { colspan: '3', class: 'muted', text: 'Nothing recorded yet.' })));
    }
    for (const event of events) {
      const day = T.formatDate(event.at);
      if (event.kind === 'procedure') {
        phase = 'post';
        const row = T.el('tr', { class: 'boundary', 'data-kind': 'procedure' },
          T.el('td', { text: day }),
          T.el('td', { text: 'Procedure' }),
          T.el('td', {}, T.el('strong', { text: event.summary }),
            T.el('span', { class: 'muted', text: ' — events below are post-operative' })));
        body.append(row);
        continue;
      }
      const row = T.el('tr', { 'data-kind': event.kind, class: phase ? `phase-${phase}` : null },
        T.el('td', { text: day }),
        T.el('td', {}, T.el('span', { class: `kind kind-${event.kind}`, text: KIND_NAMES[event.kind] || event.kind }),
          phase ? T.el('span', { class: 'phase', text: phase === 'pre' ? 'pre-op' : 'post-op' }) : null),
        T.el('td', {}, T.el('div', { text: T.unitText(event.summary) }),
          event.kind === 'analysis' ? analysisDetails(analyses.get(event.ref)) : null));
      body.append(row);
    }
  };
})(window.TwinPage);
