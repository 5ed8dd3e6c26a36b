"""The DICOM listener against a real Orthanc: Orthanc sends a study by C-STORE (its REST /modalities/{id}/store),
the listener analyses it once quiet and the results arrive back in Orthanc. Refusals, AE titles, an outage of the
PACS while results are pushed (kept, then delivered, across a listener restart)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from tests.pacs.conftest import dciodvfy_errors, require_orthanc
from twin_imaging.testing import PatientSpec, SeriesSpec, write_phantom_study
from twin_imaging.testing.network import free_port
from twin_imaging.testing.orthanc import OrthancServer
from twin_imaging.testing.phantom import PhantomGeometry

GEOMETRY = PhantomGeometry(shape=(96, 96, 40), spacing_mm=(4.0, 4.0, 5.0))
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"


class Listener:
    def __init__(self, root: Path, port: int, orthanc: OrthancServer, **settings: str) -> None:
        """settings: extra TWIN_IMAGING_* variables of the site (e.g. default_segmentation_model)."""
        self.root, self.port, self.orthanc = root, port, orthanc
        self.settings = {f"TWIN_IMAGING_{name.upper()}": value for name, value in settings.items()}
        self.process = None

    def start(self) -> Listener:
        env = {
            **os.environ,
            "TWIN_IMAGING_DATA_DIR": str(self.root / "data"),
            "TWIN_IMAGING_PACS_USERNAME": "twin",
            "TWIN_IMAGING_PACS_PASSWORD": "pacs-secret",
            "TWIN_IMAGING_OUTBOX_RETRY_SECONDS": "1",
            **self.settings,
        }
        command = [
            str(Path(sys.executable).parent / "twin-imaging"),
            "listen",
            "--ae-title",
            "TWIN",
            "--port",
            str(self.port),
            "--allow-ae",
            "ORTHANC",
            "--allow-ae",
            "TESTSCU",
            "--quiet-seconds",
            "1",
            "--destination",
            self.orthanc.dicomweb_url,
        ]
        self.log = open(self.root / "listener.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if echo(self.port, "TESTSCU") == 0x0000:
                return self
            assert self.process.poll() is None, (self.root / "listener.log").read_text()[-3000:]
            time.sleep(0.2)
        raise RuntimeError("the listener did not answer C-ECHO within 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.log.close()

    def outbox_items(self) -> list[dict]:
        pending = self.root / "data" / "outbox" / "pending"
        return [json.loads((p / "job.json").read_text()) for p in sorted(pending.glob("*"))] if pending.exists() else []


def echo(port: int, calling: str) -> int | None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", port, ae_title="TWIN")
    if not association.is_established:
        return None
    status = association.send_c_echo()
    association.release()
    return status.Status if status else None


def c_store(port: int, datasets) -> list[int | None]:
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    for pair in {(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}:
        ae.add_requested_context(*pair)
    association = ae.associate("127.0.0.1", port, ae_title="TWIN")
    assert association.is_established
    statuses = [getattr(association.send_c_store(ds), "Status", None) for ds in datasets]
    association.release()
    return statuses


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


def seg_series(orthanc: OrthancServer, study_uid: str):
    return [s for s in orthanc.study_series(study_uid) if s["SOPClassUID"] == SEG]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    require_orthanc()
    root = tmp_path_factory.mktemp("listener")
    port = free_port()
    orthanc = OrthancServer(
        root / "orthanc", users={"twin": "pacs-secret"}, modalities={"twin": ("TWIN", "127.0.0.1", port)}
    ).start()
    listener = Listener(root, port, orthanc).start()
    yield orthanc, listener
    listener.stop()
    orthanc.stop()


def test_orthanc_sends_a_study_by_c_store_and_the_results_come_back(pacs, tmp_path):
    orthanc, _ = pacs
    study = write_phantom_study(tmp_path / "s", (SeriesSpec(geometry=GEOMETRY),), patient=PatientSpec("LISTEN-1"))
    orthanc.upload(study.paths)
    study_id = orthanc.post("/tools/lookup", study.study_instance_uid.encode(), "text/plain")[0]["ID"]
    sent = orthanc.post("/modalities/twin/store", {"Resources": [study_id], "Synchronous": True})
    assert sent["InstancesCount"] == len(study.paths) and sent["FailedInstancesCount"] == 0
    found = wait_for(lambda: seg_series(orthanc, study.study_instance_uid), 120, "the SEG arriving in Orthanc")
    seg = pydicom.dcmread(io.BytesIO(orthanc.instance_file(found[0]["Instances"][0])))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.series[0].series_instance_uid
    assert not dciodvfy_errors(orthanc.instance_file(found[0]["Instances"][0]), tmp_path)


def test_c_echo_answers_and_an_unknown_calling_ae_is_refused(pacs):
    _, listener = pacs
    assert echo(listener.port, "TESTSCU") == 0x0000
    assert echo(listener.port, "STRANGER") is None  # association rejected


def test_jpeg_2000_instances_are_accepted_as_sent(pacs, tmp_path):
    orthanc, listener = pacs
    study = write_phantom_study(
        tmp_path / "j2k",
        (SeriesSpec(geometry=GEOMETRY, compression="jpeg2000"),),
        patient=PatientSpec("LISTEN-J2K"),
        seed=7,
    )
    datasets = [pydicom.dcmread(p) for p in study.paths]
    assert datasets[0].file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
    assert set(c_store(listener.port, datasets)) == {0x0000}
    wait_for(lambda: seg_series(orthanc, study.study_instance_uid), 120, "the SEG of the JPEG 2000 study")


def test_a_non_image_sop_class_is_refused_with_0122(pacs, tmp_path):
    _, listener = pacs
    report = pydicom.Dataset()
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    report.SOPInstanceUID = pydicom.uid.generate_uid()
    report.StudyInstanceUID, report.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    report.Modality, report.PatientID = "SR", "LISTEN-X"
    report.file_meta = pydicom.dataset.FileMetaDataset()
    report.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    assert c_store(listener.port, [report]) == [0x0122]


def test_results_are_kept_while_the_pacs_is_down_and_delivered_after_restarts(pacs, tmp_path):
    orthanc, listener = pacs
    study = write_phantom_study(
        tmp_path / "s", (SeriesSpec(geometry=GEOMETRY),), patient=PatientSpec("LISTEN-2"), seed=5
    )
    orthanc.stop()
    try:
        datasets = [pydicom.dcmread(p) for p in study.paths]
        assert set(c_store(listener.port, datasets)) == {0x0000}  # stored durably before each answer
        item = wait_for(
            lambda: [i for i in listener.outbox_items() if i["attempts"] >= 1], 120, "a failed delivery being queued"
        )
        assert "cannot be reached" in item[0]["errors"][-1]
        listener.stop()  # the queue must survive a restart of the listener too
        listener.start()
    finally:
        orthanc.start()
    wait_for(lambda: seg_series(orthanc, study.study_instance_uid), 120, "the queued SEG arriving after the outage")
    wait_for(lambda: not listener.outbox_items(), 30, "the outbox emptying")


def test_associations_beyond_the_limit_are_refused(tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from twin_imaging.inbox import StudyInbox
    from twin_imaging.pacs.listener import ListenerConfig, StudyListener
    from twin_imaging.pacs.outbox import Outbox

    port = free_port()
    config = ListenerConfig(ae_title="TWIN", host="127.0.0.1", port=port, destination=None, max_associations=1)
    listener = StudyListener(
        config,
        inbox=StudyInbox(tmp_path / "in"),
        outbox=Outbox(tmp_path / "out"),
        store=None,
        send=None,
        segmenter=None,
    )
    listener.start()
    try:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        first = ae.associate("127.0.0.1", port, ae_title="TWIN")
        assert first.is_established
        second = ae.associate("127.0.0.1", port, ae_title="TWIN")
        assert not second.is_established  # refused: the limit is one
        first.release()
    finally:
        listener.stop()


def test_a_malformed_destination_is_a_usage_error():
    from click.testing import CliRunner

    from twin_imaging.cli import cli

    result = CliRunner().invoke(cli, ["listen", "--destination", "pacs:4242"])
    assert result.exit_code == 2 and "AET@host:port" in result.output
    assert CliRunner().invoke(cli, ["listen", "--port", "0"]).exit_code == 2


def test_a_study_sent_in_two_parts_is_analysed_whole_and_the_partial_results_are_withdrawn(pacs, tmp_path):
    """The first half of a series by C-STORE, its results back in Orthanc; then the rest: the listener analyses all
    of it (kept instances + new ones), sends the new SEG and a Key Object Selection "Rejected for Quality Reasons"
    (IHE IOCM) naming the first SEG and SR, which dciodvfy accepts."""
    orthanc, listener = pacs
    study = write_phantom_study(
        tmp_path / "parts", (SeriesSpec(geometry=GEOMETRY),), patient=PatientSpec("LISTEN-PARTS"), seed=11
    )
    datasets = [pydicom.dcmread(p) for p in study.series[0].paths]  # in slice order
    half = len(datasets) // 2
    assert set(c_store(listener.port, datasets[:half])) == {0x0000}
    first = wait_for(lambda: seg_series(orthanc, study.study_instance_uid), 120, "the first half's SEG")
    first_seg = pydicom.dcmread(io.BytesIO(orthanc.instance_file(first[0]["Instances"][0])))
    assert _sources(first_seg) <= {d.SOPInstanceUID for d in datasets[:half]}

    assert set(c_store(listener.port, datasets[half:])) == {0x0000}
    notes = wait_for(
        lambda: [s for s in orthanc.study_series(study.study_instance_uid) if s["SOPClassUID"] == KOS],
        120,
        "the rejection note of the first results",
    )
    note_file = orthanc.instance_file(notes[0]["Instances"][0])
    note = pydicom.dcmread(io.BytesIO(note_file))
    assert note.ConceptNameCodeSequence[0].CodeValue == "113001"  # Rejected for Quality Reasons
    rejected = {
        ref.ReferencedSOPInstanceUID
        for item in note.CurrentRequestedProcedureEvidenceSequence
        for series in item.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert first_seg.SOPInstanceUID in rejected and len(rejected) == 2  # the first SEG and its SR
    assert not dciodvfy_errors(note_file, tmp_path)
    segs = wait_for(
        lambda: (
            [s for s in seg_series(orthanc, study.study_instance_uid) if len(s["Instances"]) >= 1]
            if sum(len(s["Instances"]) for s in seg_series(orthanc, study.study_instance_uid)) >= 2
            else []
        ),
        120,
        "the SEG of the whole series",
    )
    newest = [pydicom.dcmread(io.BytesIO(orthanc.instance_file(i))) for s in segs for i in s["Instances"]]
    whole = next(s for s in newest if s.SOPInstanceUID != first_seg.SOPInstanceUID)
    assert _sources(whole) - {d.SOPInstanceUID for d in datasets[:half]}  # it covers slices of the second part too


def _sources(seg: pydicom.Dataset) -> set[str]:
    return {
        ref.ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
        for ref in frame.DerivationImageSequence[0].SourceImageSequence
    }


def _c_store_answers(port: int, datasets) -> list:
    """The full C-STORE answers (Status and, where refused, Error Comment)."""
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    for pair in {(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}:
        ae.add_requested_context(*pair)
    association = ae.associate("127.0.0.1", port, ae_title="TWIN")
    assert association.is_established
    answers = [association.send_c_store(ds) for ds in datasets]
    association.release()
    return answers


@pytest.fixture(scope="module")
def renal_listener(pacs, tmp_path_factory):
    """A second listener, on the same PACS, of a site that opted in to the renal cascade as its default model (the
    product default where none is installed: the SEG part of the test needs no model mask)."""
    from tests.conftest import renal_mass_model
    from twin_imaging.settings import get_settings

    orthanc, _ = pacs
    model = renal_mass_model() or get_settings().default_segmentation_model
    listener = Listener(
        tmp_path_factory.mktemp("renal_listener"), free_port(), orthanc, default_segmentation_model=model
    ).start()
    yield orthanc, listener, model
    listener.stop()


def test_a_radiologists_seg_comes_in_by_c_store_and_a_bad_one_is_refused_with_the_reason(renal_listener, tmp_path):
    from tests.conftest import renal_mass_model
    from tests.test_expert_intake import KIDNEYS_AND_TUMOUR, TUMOUR
    from twin_imaging.outcome.twin_scenarios import current_scenarios
    from twin_imaging.testing import PhantomAnatomy
    from twin_imaging.testing.expert_seg import radiologist_seg
    from twin_imaging.twin.store import TwinStore

    orthanc, listener, model = renal_listener
    study = write_phantom_study(
        tmp_path / "mass",
        (SeriesSpec(geometry=GEOMETRY),),
        patient=PatientSpec("LISTEN-SEG"),
        anatomy=PhantomAnatomy().with_structure(TUMOUR),
        seed=11,
    )
    sources = [pydicom.dcmread(p) for p in study.paths]
    assert set(c_store(listener.port, sources)) == {0x0000}
    wait_for(lambda: seg_series(orthanc, study.study_instance_uid), 120, "the analysis of the study with a mass")
    seg = radiologist_seg(sources, study.series[0].phantom.labels, KIDNEYS_AND_TUMOUR)
    seg.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    stray = radiologist_seg(sources, study.series[0].phantom.labels, KIDNEYS_AND_TUMOUR)
    stray.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.826.0.1.3680043.99.1"
    stray.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    accepted, refused = _c_store_answers(listener.port, [seg, stray])
    assert accepted.Status == 0x0000
    assert refused.Status == 0xC000 and "no completed analys" in refused.ErrorComment
    with TwinStore(f"sqlite:///{listener.root / 'data' / 'twin.sqlite3'}", artifacts_dir=listener.root / "x") as store:
        summary = store.summary(store.patient_key_for("LISTEN-SEG"), actor="test")
        (analysis,) = [a for a in summary.analyses if a.superseded_by is None]
        (expert,) = analysis.expert_segmentations
        assert expert.received_via == "c-store" and expert.sop_instance_uid == seg.SOPInstanceUID
        expert_source = f"expert_seg:{seg.SOPInstanceUID}"
        sources_of = {p.mask_source for p in summary.predictions}
        assert expert_source in sources_of and sources_of <= {expert_source, "model"}
        if model == renal_mass_model():  # the listener's model found the tumour: its scenarios ran at C-STORE time
            assert "model" in sources_of
        (current,) = current_scenarios(summary)
        assert current["mask_source"] == expert_source  # the scenarios that count ran on the radiologist's masks
