// Viewer: the analysis' CT in axial, coronal and sagittal planes with its segmentation over it (Niivue, WebGL2), and
// a 3D view of the organ surfaces (the patient-specific model) that can be rotated with the mouse. Both read the
// downsized copies made at analysis time (viewer_ct, viewer_labels: a few MB) and the analysis' meshes.
'use strict';

(function viewerView(T) {
  const WINDOWS = { abdomen: [-160, 240], liver: [-15, 135], bone: [-500, 1300], lung: [-1350, 150] };
  const viewer = { slices: null, render: null, ct: null, labels: null, structures: [], hidden: new Set(),
    meshes: new Map(), analysisId: null };

  async function niivueOn(canvasId, sliceType) {
    const nv = new niivue.Niivue({ backColor: [0, 0, 0, 1], isColorbar: false, show3Dcrosshair: false,
      dragAndDropEnabled: false, loadingText: '', logLevel: 'error', isOrientCube: sliceType === 'render',
      isRadiologicalConvention: true }); // the patient's right on the screen's left, as in the PACS viewer
    await nv.attachTo(canvasId);
    nv.setSliceType(sliceType === 'render' ? nv.sliceTypeRender : nv.sliceTypeMultiplanar);
    return nv;
  }

  function status(text) {
    document.getElementById('viewer-status').textContent = text;
  }

  function labelColormap() {
    const top = Math.max(0, ...viewer.structures.map((s) => s.label));
    const cm = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [''] };
    for (const s of viewer.structures) {
      const color = s.color || [170, 170, 170];
      cm.R.push(color[0]); cm.G.push(color[1]); cm.B.push(color[2]);
      cm.A.push(viewer.hidden.has(s.name) ? 0 : 255);
      cm.I.push(s.label);
      cm.labels.push(s.display);
    }
    if (top === 0) cm.I[0] = 0;
    return cm;
  }

  function applyLabels() {
    if (!viewer.labels) return;
    viewer.labels.setColormapLabel(labelColormap());
    viewer.slices.updateGLVolume();
    for (const [name, mesh] of viewer.meshes) {
      viewer.render.setMeshProperty(mesh.id, 'visible', !viewer.hidden.has(name));
    }
    viewer.render.drawScene();
  }

  function renderLegend() {
    const list = document.getElementById('legend');
    list.replaceChildren(...viewer.structures.map((s) => {
      const box = T.el('input', { type: 'checkbox', id: `show-${s.name}`, 'data-structure': s.name,
        checked: !viewer.hidden.has(s.name) });
      box.addEventListener('change', () => {
        if (box.checked) viewer.hidden.delete(s.name); else viewer.hidden.add(s.name);
        applyLabels();
      });
      const swatch = T.el('span', { class: 'swatch' });
      swatch.style.backgroundColor = T.rgb(s.color);
      return T.el('li', {}, box, T.el('label', { for: `show-${s.name}` }, swatch,
        T.el('span', { text: ` ${s.display}` }), T.el('span', { class: 'muted', text: ` ${T.formatNumber(s.volumeMl)} mL` })));
    }));
  }

  T.viewerAnalyses = (summary) => summary.analyses.filter((a) => a.status === 'completed'
    && a.artifacts.some((x) => x.kind === 'viewer_ct') && a.artifacts.some((x) => x.kind === 'viewer_labels'));

  T.fillAnalysisChoices = function fillAnalysisChoices(summary) {
    const dates = new Map(summary.studies.map((s) => [s.study_instance_uid, s.study_date]));
    const select = document.getElementById('analysis-select');
    const choices = T.viewerAnalyses(summary);
    select.replaceChildren(...choices.map((a) => T.el('option', { value: a.analysis_id,
      text: `${dates.get(a.study_instance_uid) || T.formatDate(a.started_at)} · ${a.model_id} ${a.model_version}` })));
    if (choices.length) select.selectedIndex = choices.length - 1;
    return choices.length;
  };

  T.showAnalysis = async function showAnalysis(analysisId) {
    if (!analysisId) {
      status('No analysis of this patient has viewer images (analyses made before the twin page have none).');
      return;
    }
    if (viewer.analysisId === analysisId) return;
    status('Loading the images…');
    viewer.slices = viewer.slices || (await niivueOn('slices', 'slices'));
    viewer.render = viewer.render || (await niivueOn('render3d', 'render'));
    const [structures, ctBuffer, labelBuffer] = await Promise.all([T.structuresOf(analysisId),
      T.artifact(analysisId, 'viewer_ct'), T.artifact(analysisId, 'viewer_labels')]);
    for (const volume of [...viewer.slices.volumes]) viewer.slices.removeVolume(volume);
    const [low, high] = WINDOWS[document.getElementById('window-preset').value];
    viewer.ct = await niivue.NVImage.loadFromUrl({ url: ctBuffer, name: 'viewer_ct.nii.gz', colormap: 'gray',
      cal_min: low, cal_max: high, trustCalMinMax: true });
    viewer.labels = await niivue.NVImage.loadFromUrl({ url: labelBuffer, name: 'viewer_labels.nii.gz',
      opacity: Number(document.getElementById('opacity').value) });
    viewer.structures = structures;
    viewer.hidden = new Set();
    viewer.slices.addVolume(viewer.ct);
    viewer.slices.addVolume(viewer.labels);
    viewer.ct.cal_min = low;
    viewer.ct.cal_max = high;
    viewer.analysisId = analysisId;
    renderLegend();
    applyLabels();
    status('Drag in the planes to move the cross-hair; drag in the 3D view to rotate it.');
    await loadMeshes(analysisId);
  };

  async function loadMeshes(analysisId) {
    for (const mesh of [...viewer.render.meshes]) viewer.render.removeMesh(mesh);
    viewer.meshes = new Map();
    let answer;
    try {
      answer = await T.json('/page/api/meshes', { analysis_id: analysisId });
    } catch (error) {
      status(error.status === 404 ? 'This analysis has no surface meshes.' : `3D view: ${error.message}`);
      return;
    }
    const colors = new Map(viewer.structures.map((s) => [s.name, s.color || [170, 170, 170]]));
    for (const item of answer.meshes) {
      const vertices = new Float32Array(Uint8Array.from(atob(item.vertices), (c) => c.charCodeAt(0)).buffer);
      const faces = new Uint32Array(Uint8Array.from(atob(item.faces), (c) => c.charCodeAt(0)).buffer);
      const color = colors.get(item.name) || [170, 170, 170];
      const mesh = new niivue.NVMesh(vertices, faces, item.name, new Uint8Array([...color, 255]), 1.0,
        !viewer.hidden.has(item.name), viewer.render.gl);
      viewer.render.addMesh(mesh);
      viewer.meshes.set(item.name, mesh);
    }
    viewer.render.setRenderAzimuthElevation(200, 15);
    document.getElementById('render3d').dataset.meshes = String(viewer.meshes.size);
  }

  T.setWindow = function setWindow(preset) {
    if (!viewer.ct) return;
    [viewer.ct.cal_min, viewer.ct.cal_max] = WINDOWS[preset];
    viewer.slices.updateGLVolume();
  };

  T.setOverlayOpacity = function setOverlayOpacity(value) {
    if (viewer.labels) viewer.slices.setOpacity(1, Number(value));
  };

  T.resetViewer = function resetViewer() {
    viewer.analysisId = null;
  };
})(window.TwinPage);
