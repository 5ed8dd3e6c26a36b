"""`twin-imaging pacs …` and `twin-imaging listen`: studies from the PACS, results back into it.

DICOMweb credentials come from the settings only (TWIN_IMAGING_PACS_USERNAME and TWIN_IMAGING_PACS_PASSWORD, or
TWIN_IMAGING_PACS_TOKEN for a bearer token), never from the command line, where other users could read them.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
from pathlib import Path

import click


def _outbox():
    from twin_imaging.pacs.outbox import Outbox
    from twin_imaging.settings import get_settings

    settings = get_settings()
    return Outbox(
        settings.outbox_dir, retry_seconds=settings.outbox_retry_seconds, max_attempts=settings.outbox_max_attempts
    )


def _send():
    from twin_imaging.pacs.dimse import send_results
    from twin_imaging.settings import get_settings

    settings = get_settings()
    return lambda destination, datasets: send_results(destination, datasets, settings)


def _outcome_model():
    """The outcome model for the scenarios of a radiologist's SEG; None (said in the log) where it cannot load."""
    from twin_imaging.errors import ModelError
    from twin_imaging.outcome.model import OutcomeModel

    try:
        return OutcomeModel()
    except ModelError as exc:
        logging.getLogger(__name__).warning("no outcome model: SEGs are recorded without scenarios (%s)", exc)
        return None


@click.group()
def pacs() -> None:
    """Pull studies from a DICOMweb PACS and push the results back; deliver what is queued."""


@pacs.command()
@click.option("--url", required=True, help="DICOMweb service root, e.g. http://pacs:8042/dicom-web")
@click.option("--study", "study_uid", required=True, help="StudyInstanceUID to pull.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Keep the files here.")
@click.option("--push/--no-push", default=True, show_default=True, help="Send SEG, SR and overlays back (STOW-RS).")
@click.option("--twin/--no-twin", "attach", default=True, show_default=True, help="Attach the result to the twin.")
def pull(url: str, study_uid: str, out_dir: Path | None, push: bool, attach: bool) -> None:
    """Retrieve a study's CT/MR series (QIDO-RS, WADO-RS), analyse it, attach it, push the results back."""
    from twin_imaging.cli_twin import actor, open_store
    from twin_imaging.pacs.dicomweb import DicomWebAuth, DicomWebPeer
    from twin_imaging.pacs.pull import pull_study
    from twin_imaging.settings import get_settings

    peer = DicomWebPeer(url, DicomWebAuth.from_settings(get_settings()))
    with tempfile.TemporaryDirectory() as scratch:
        work = out_dir or Path(scratch)
        store = open_store(None) if attach else None
        try:
            outcome = pull_study(
                peer,
                study_uid,
                work,
                actor=actor(),
                store=store,
                outbox=_outbox() if push else None,
                send=_send() if push else None,
            )
        finally:
            if store is not None:
                store.close()
    document = outcome.result.document
    chosen = next((c for c in document.input.series_found if c.chosen), None)
    click.echo(
        f"retrieved {outcome.retrieved_files} instances; analysed {chosen.series if chosen else 'the series'}"
        f"{f' ({chosen.reason})' if chosen else ''}"
    )
    click.echo("structures: " + ", ".join(f"{s.name} {s.volume_ml:.0f} mL" for s in document.structures))
    if outcome.analysis_id is not None:
        click.echo(f"attached to the twin as analysis {outcome.analysis_id}")
    if outcome.delivery is not None:
        if outcome.outbox_item in outcome.delivery.sent:
            click.echo(f"results stored in the PACS study {study_uid} (STOW-RS)")
        else:
            click.echo("the PACS did not take the results; they are queued (twin-imaging pacs deliver)", err=True)
            raise SystemExit(3)


@pacs.command()
@click.option("--force", is_flag=True, help="Try every queued item now, not only those due.")
def deliver(force: bool) -> None:
    """Send the results waiting in the outbox; what fails stays queued."""
    outbox = _outbox()
    report = outbox.deliver_due(_send(), force=force)
    click.echo(f"delivered {len(report.sent)}; still queued {len(outbox.pending())}")
    if report.retrying:
        raise SystemExit(3)


@pacs.command()
def outbox() -> None:
    """What waits in the outbox, and what was given up (dead letters): destination, attempts, last error."""
    box = _outbox()
    items, dead = box.pending(), box.dead()
    for state, group in (("pending", items), ("DEAD", dead)):
        for item in group:
            last = item.errors[-1] if item.errors else "not tried yet"
            click.echo(
                f"{state}\t{item.item_id}\t{item.label}\t{item.destination.describe()}\t{item.attempts} attempts\t"
                f"{last}"
            )
    if not items and not dead:
        click.echo("the outbox is empty")


@click.command()
@click.option("--ae-title", help="Our AE title (default: settings, TWIN).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: settings, 11112).")
@click.option("--allow-ae", "allowed", multiple=True, help="Calling AE title allowed (repeatable; default: settings).")
@click.option("--destination", help="Where results go: a DICOMweb URL (STOW-RS) or AET@host:port (C-STORE).")
@click.option(
    "--quiet-seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="A study is complete after this long without a new instance.",
)
@click.option("--max-associations", type=click.IntRange(1), help="Associations at once (default: settings, 8).")
def listen(ae_title, host, port, allowed, destination, quiet_seconds, max_associations) -> None:
    """Receive studies by C-STORE, analyse each once complete, send the results to the destination."""
    from twin_imaging.cli_twin import open_store
    from twin_imaging.inbox import StudyInbox
    from twin_imaging.inference.segment import Segmenter
    from twin_imaging.models.package import default_segmentation_package
    from twin_imaging.pacs.listener import ListenerConfig, StudyListener
    from twin_imaging.pacs.outbox import Destination
    from twin_imaging.settings import get_settings

    settings = get_settings()
    try:
        target = Destination.parse(destination) if destination else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--destination") from None
    configured = tuple(a.strip() for a in settings.listener_allowed_calling_aets.split(",") if a.strip())
    config = ListenerConfig(
        ae_title=ae_title or settings.listener_ae_title,
        host=host,
        port=port or settings.listener_port,
        destination=target,
        allowed_calling_aets=tuple(allowed) or configured,
        max_associations=max_associations or settings.listener_max_associations,
        quiet_seconds=quiet_seconds or settings.listener_study_quiet_seconds,
    )
    logging.getLogger("twin_imaging").setLevel(logging.INFO)
    store = open_store(None)
    listener = StudyListener(
        config,
        inbox=StudyInbox(
            settings.data_dir / "listener_inbox", keep_analysed_seconds=settings.inbox_keep_analysed_hours * 3600.0
        ),
        outbox=_outbox(),
        store=store,
        send=_send(),
        segmenter=Segmenter(default_segmentation_package()),
        outcome_model=_outcome_model(),
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    listener.start()
    click.echo(
        f"listening as {config.ae_title} on {config.host}:{config.port}"
        f"{f', results to {target.describe()}' if target else ''}; Ctrl-C stops",
        err=True,
    )
    stop.wait()
    listener.stop()
    store.close()
