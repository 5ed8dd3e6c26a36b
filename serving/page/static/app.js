// The page's flow: sign in (once), find a patient by id (never a list of everyone), then the four views.
'use strict';

(function app(T) {
  const $ = (id) => document.getElementById(id);
  const page = { patientId: null, summary: null, view: 'timeline' };

  // What each stage of the flow shows: the patient views keep the search box above them.
  const SHOWN = { 'sign-in': ['sign-in'], search: ['search'], patient: ['search', 'patient'] };

  function show(stage) {
    for (const id of ['sign-in', 'search', 'patient']) $(id).hidden = !SHOWN[stage].includes(id);
  }

  function say(text, kind = 'error') {
    const box = $('message');
    box.textContent = text || '';
    box.className = `message ${kind}`;
    box.hidden = !text;
  }

  function signedIn(who) {
    $('who').textContent = `${who.name} (${who.role})`;
    $('sign-out').hidden = false;
    show('search');
    $('patient-id').focus();
  }

  T.onSignedOut = (message) => {
    $('who').textContent = '';
    $('sign-out').hidden = true;
    page.patientId = null;
    page.summary = null;
    $('patient-title').textContent = '';
    show('sign-in');
    say(message || 'Signed out.', 'info');
  };

  async function signIn(event) {
    event.preventDefault();
    const key = $('key').value.trim();
    $('key').value = '';
    try {
      const response = await T.call('/page/session', undefined, { headers: { Authorization: `Bearer ${key}` } });
      say('');
      signedIn(await response.json());
    } catch (error) {
      say(error.status === 403 ? 'This key may not open patient pages: the twin page needs a clinician key.'
        : error.status === 401 ? 'This key is not known to the service.' : `Sign-in failed: ${error.message}`);
    }
  }

  async function openPatient(event) {
    event.preventDefault();
    const patientId = $('patient-id').value.trim();
    if (!patientId) return;
    say('');
    try {
      const [summary, timeline] = await Promise.all([T.json('/v1/twin/get', { patient_id: patientId }),
        T.json('/v1/twin/timeline', { patient_id: patientId })]);
      page.patientId = patientId;
      page.summary = summary;
      T.clearCaches();
      T.resetViewer();
      const sex = summary.patient.sex ? `, sex ${summary.patient.sex}` : '';
      const born = summary.patient.birth_year ? `, born ${summary.patient.birth_year}` : '';
      $('patient-title').textContent = `${patientId}${sex}${born}`;
      T.renderTimeline(summary, timeline.events);
      show('patient');
      await choose(page.view);
    } catch (error) {
      if (error.status === 404) say(`No patient with the id “${patientId}” is in the twin.`);
      else if (error.status !== 401) say(`The patient could not be opened: ${error.message}`);
    }
  }

  async function choose(view) {
    page.view = view;
    for (const tab of document.querySelectorAll('[role=tab]')) tab.setAttribute('aria-selected', String(tab.dataset.view === view));
    for (const name of ['timeline', 'trends', 'viewer', 'scenarios']) $(`view-${name}`).hidden = name !== view;
    T.call('/page/api/view', { patient_id: page.patientId, view }).catch(() => {}); // the audit row of this view
    try {
      if (view === 'trends') await T.renderTrends(page.summary);
      if (view === 'viewer') {
        T.fillAnalysisChoices(page.summary);
        await T.showAnalysis($('analysis-select').value);
      }
      if (view === 'scenarios') {
        T.renderScenarios(await T.json('/v1/twin/scenarios', { patient_id: page.patientId }), page.summary);
      }
    } catch (error) {
      if (error.status !== 401) say(`The ${view} could not be shown: ${error.message}`);
    }
  }

  async function start() {
    $('sign-in-form').addEventListener('submit', signIn);
    $('search-form').addEventListener('submit', openPatient);
    $('sign-out').addEventListener('click', async () => {
      await fetch('/page/logout', { method: 'POST', credentials: 'same-origin' });
      T.onSignedOut('Signed out.');
    });
    for (const tab of document.querySelectorAll('[role=tab]')) tab.addEventListener('click', () => choose(tab.dataset.view));
    $('compare-form').addEventListener('submit', (event) => {
      event.preventDefault();
      T.compareStudies(page.patientId, page.summary).catch((error) => say(`Comparison: ${error.message}`));
    });
    $('analysis-select').addEventListener('change', (event) => T.showAnalysis(event.target.value)
      .catch((error) => say(`Viewer: ${error.message}`)));
    $('window-preset').addEventListener('change', (event) => T.setWindow(event.target.value));
    $('opacity').addEventListener('input', (event) => T.setOverlayOpacity(event.target.value));
    const who = await (await T.call('/page/whoami', undefined, { method: 'GET' })).json();
    if (who.signed_in) signedIn(who); else show('sign-in');
    document.body.dataset.ready = 'true';
  }

  start();
})(window.TwinPage);
