"""DICOMweb both ways against a real Orthanc: a study is stored, pulled, analysed, and its SEG, SR and overlay
captures land in the same Orthanc study, referencing the source series, and pass dciodvfy."""

from __future__ import annotations

import io

import pydicom
import pytest
from click.testing import CliRunner

from tests.conftest import shared_file
from tests.pacs.conftest import dciodvfy_errors
from twin_imaging.cli import cli
from twin_imaging.settings import get_settings
from twin_imaging.testing import PatientSpec, SeriesSpec, StudySpec, copy_series_with_uids, write_phantom_study
from twin_imaging.testing.phantom import PhantomGeometry

GEOMETRY = PhantomGeometry(shape=(96, 96, 40), spacing_mm=(4.0, 4.0, 5.0))
SEG, SR, SC = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture()
def pacs_env(monkeypatch, orthanc):
    monkeypatch.setenv("TWIN_IMAGING_PACS_USERNAME", "twin")
    monkeypatch.setenv("TWIN_IMAGING_PACS_PASSWORD", "pacs-secret")
    return orthanc


def pull(orthanc, study_uid: str):
    return CliRunner().invoke(cli, ["pacs", "pull", "--url", orthanc.dicomweb_url, "--study", study_uid])


def results_in_orthanc(orthanc, study_uid: str) -> dict[str, dict]:
    return {s["SOPClassUID"]: s for s in orthanc.study_series(study_uid) if s["SOPClassUID"] in (SEG, SR, SC)}


def test_a_phantom_study_with_several_series_is_pulled_analysed_and_its_results_pushed_back(pacs_env, tmp_path):
    orthanc = pacs_env
    study = write_phantom_study(
        tmp_path / "study",
        (
            SeriesSpec(geometry=GEOMETRY, series_number=1, kind="localizer"),
            SeriesSpec(geometry=PhantomGeometry(shape=(96, 96, 10), spacing_mm=(4.0, 4.0, 20.0)), series_number=2),
            SeriesSpec(geometry=GEOMETRY, series_number=3),
        ),
        patient=PatientSpec(patient_id="PACS-1"),
        study=StudySpec(accession_number="PACS0001"),
    )
    orthanc.upload(study.paths)
    result = pull(orthanc, study.study_instance_uid)
    assert result.exit_code == 0, result.output
    assert "results stored in the PACS" in result.output
    chosen = study.series_by_number(3).series_instance_uid
    found = results_in_orthanc(orthanc, study.study_instance_uid)
    assert set(found) == {SEG, SR, SC}, found
    seg = pydicom.dcmread(io.BytesIO(orthanc.instance_file(found[SEG]["Instances"][0])))
    assert seg.StudyInstanceUID == study.study_instance_uid and seg.PatientID == "PACS-1"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == chosen  # the thin series, not the localizer
    codes = {s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator for s in seg.SegmentSequence}
    assert codes == {"SCT"} and all("RecommendedDisplayCIELabValue" in s for s in seg.SegmentSequence)
    # Each SEG frame sits exactly where the source image it references sits (no shifted overlays in a viewer).
    positions = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p).ImagePositionPatient for p in study.paths}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        here = frame.PlanePositionSequence[0].ImagePositionPatient
        assert [round(float(a), 3) for a in here] == [round(float(b), 3) for b in positions[source]]
    sc = pydicom.dcmread(io.BytesIO(orthanc.instance_file(found[SC]["Instances"][0])))
    assert sc.StudyInstanceUID == study.study_instance_uid and sc.PhotometricInterpretation == "RGB"
    for series in found.values():
        for instance in series["Instances"]:
            assert not dciodvfy_errors(orthanc.instance_file(instance), tmp_path), series["SOPClassUID"]
    again = pull(orthanc, study.study_instance_uid)  # the same analysis again files the same objects: no duplicates
    assert again.exit_code == 0, again.output
    counts = {}
    for series in orthanc.study_series(study.study_instance_uid):
        counts[series["SOPClassUID"]] = counts.get(series["SOPClassUID"], 0) + len(series["Instances"])
    assert {k: counts[k] for k in (SEG, SR, SC)} == {SEG: 1, SR: 1, SC: 3}
    assert "analysed #3 CT" in result.output and chosen in result.output  # which series, and why (printed after it)


def test_the_real_series_goes_through_orthanc_and_back(pacs_env, tmp_path, shared_data):
    orthanc = pacs_env
    paths = copy_series_with_uids(shared_file(shared_data, "totalsegmentator/example_ct_dicom"), tmp_path / "real")
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)
    study_uid = source.StudyInstanceUID
    orthanc.upload(paths)
    result = pull(orthanc, study_uid)
    assert result.exit_code == 0, result.output
    found = results_in_orthanc(orthanc, study_uid)
    assert {SEG, SR} <= set(found)
    seg = pydicom.dcmread(io.BytesIO(orthanc.instance_file(found[SEG]["Instances"][0])))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    for sop_class in (SEG, SR):
        assert not dciodvfy_errors(orthanc.instance_file(found[sop_class]["Instances"][0]), tmp_path)


def test_wrong_credentials_and_an_unknown_study_are_clear_errors(orthanc, monkeypatch):
    monkeypatch.setenv("TWIN_IMAGING_PACS_USERNAME", "twin")
    monkeypatch.setenv("TWIN_IMAGING_PACS_PASSWORD", "wrong")
    refused = pull(orthanc, "1.2.3.4.5")
    assert refused.exit_code != 0 and "401" in refused.output
    monkeypatch.setenv("TWIN_IMAGING_PACS_PASSWORD", "pacs-secret")
    get_settings.cache_clear()
    missing = pull(orthanc, "1.2.3.4.5")
    assert missing.exit_code != 0 and "not found" in missing.output
    no_url = CliRunner().invoke(cli, ["pacs", "pull", "--url", "pacs:8042", "--study", "1.2.3"])
    assert no_url.exit_code == 1 and "starts with http://" in no_url.output and "internal error" not in no_url.output


def test_a_bearer_token_is_sent_as_such(monkeypatch):
    from twin_imaging.pacs.dicomweb import DicomWebAuth, DicomWebPeer

    peer = DicomWebPeer("http://127.0.0.1:1/dicom-web", DicomWebAuth(token="abc.def"))
    assert peer.session.headers["Authorization"] == "Bearer abc.def" and peer.session.auth is None


def test_results_can_go_by_c_store_to_an_ae(orthanc, tmp_path, monkeypatch):
    """The listener's other kind of destination: C-STORE to a DICOM node (here Orthanc's own AE)."""
    from twin_imaging.pacs.dimse import send_results
    from twin_imaging.pacs.outbox import Destination
    from twin_imaging.pacs.results import result_datasets
    from twin_imaging.pipeline import analyze_study

    study = write_phantom_study(tmp_path / "s", (SeriesSpec(geometry=GEOMETRY),), patient=PatientSpec("PACS-DIMSE"))
    orthanc.upload(study.paths)
    result = analyze_study(tmp_path / "s", tmp_path / "out")
    destination = Destination.parse(f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}")
    send_results(destination, result_datasets(result), get_settings())
    assert {SEG, SR, SC} <= {s["SOPClassUID"] for s in orthanc.study_series(study.study_instance_uid)}
    with pytest.raises(Exception, match="association refused or the node cannot be reached"):
        send_results(Destination.dimse("127.0.0.1", 1, "NOBODY"), result_datasets(result)[:1], get_settings())


def test_a_pull_whose_push_fails_keeps_the_results_until_the_pacs_is_back(tmp_path, monkeypatch):
    """Orthanc goes down between the retrieve and the push: the results stay in the outbox (listed with the error)
    and `pacs deliver` sends them once Orthanc is back."""
    from tests.pacs.conftest import require_orthanc
    from twin_imaging.testing.orthanc import OrthancServer

    require_orthanc()
    orthanc = OrthancServer(tmp_path / "orthanc").start()
    try:
        study = write_phantom_study(tmp_path / "s", (SeriesSpec(geometry=GEOMETRY),), patient=PatientSpec("PACS-OUT"))
        orthanc.upload(study.paths)
        from twin_imaging.pacs import pull as pull_module

        retrieve = pull_module.DicomWebPeer.retrieve_image_series

        def retrieve_then_fall_over(self, *args, **kwargs):
            files = retrieve(self, *args, **kwargs)
            orthanc.stop()
            return files

        monkeypatch.setattr(pull_module.DicomWebPeer, "retrieve_image_series", retrieve_then_fall_over)
        failed = pull(orthanc, study.study_instance_uid)
        assert failed.exit_code == 3 and "queued" in failed.output
        listed = CliRunner().invoke(cli, ["pacs", "outbox"])
        assert "cannot be reached" in listed.output and "1 attempts" in listed.output
        still_down = CliRunner().invoke(cli, ["pacs", "deliver", "--force"])
        assert still_down.exit_code == 3 and "still queued 1" in still_down.output
        orthanc.start()
        delivered = CliRunner().invoke(cli, ["pacs", "deliver", "--force"])
        assert delivered.exit_code == 0 and "delivered 1; still queued 0" in delivered.output
        assert {SEG, SR, SC} <= {s["SOPClassUID"] for s in orthanc.study_series(study.study_instance_uid)}
    finally:
        orthanc.stop()
