"""Malformed values outside the geometry (a PatientBirthDate of ``19701332``) must not stop an analysis.

The writers of derived objects (highdicom's SEG, our SR and secondary captures) copy the patient and study modules
from the source images and parse their dates and times on the way; one impossible date made every analysis of such
a study fail. ``blank_invalid_dates`` leaves such a value empty (allowed for the Type 2 and 3 attributes these are)
and says which attribute it blanked, never the value, which may identify the patient. pydicom itself only warns on
reading an invalid DA, so the check is done here, by parsing with the standard library.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from datetime import date, datetime, time

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

_DATE_VRS = frozenset({"DA", "TM", "DT"})
_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")


def is_valid_value(vr: str, value: str) -> bool:
    """Whether a DA, TM or DT string names a real date or time (an empty value is valid)."""
    value = value.strip()
    if not value:
        return True
    try:
        if vr == "DA":
            match = _DA.match(value)
            return bool(match) and bool(date(*(int(g) for g in match.groups())))
        if vr == "TM":
            match = _TM.match(value)
            if not match:
                return False
            hour, minute, second = (int(g) if g else 0 for g in match.groups()[:3])
            return bool(time(hour, minute, min(second, 59)))  # 60: a leap second is allowed
        if vr == "DT":
            match = _DT.match(value)
            if not match:
                return False
            parts = [int(g) if g else d for g, d in zip(match.groups()[:6], (1, 1, 1, 0, 0, 0), strict=True)]
            return bool(datetime(*parts[:5], min(parts[5], 59)))
    except ValueError:
        return False
    return True


def blank_invalid_dates(headers: Sequence[Dataset]) -> tuple[list[Dataset], list[str]]:
    """``headers`` with every top-level DA, TM or DT value that is not a real date or time left empty.

    Returns the headers (the same objects where nothing was wrong, copies where something was) and one warning per
    blanked attribute keyword, naming the attribute only.
    """
    blanked: list[str] = []
    fixed_by_id: dict[int, Dataset] = {}  # an Enhanced CT's one header stands for every slice: copied once
    out: list[Dataset] = []
    for header in headers:
        if id(header) in fixed_by_id:
            out.append(fixed_by_id[id(header)])
            continue
        bad = [(tag, name) for tag, name, vr, value in _date_values(header) if not is_valid_value(vr, value)]
        fixed = header
        if bad:
            fixed = copy.deepcopy(header)  # headers carry no pixel data here: cheap, and the caller's stay untouched
            for tag, name in bad:
                fixed[tag].value = ""
                if name not in blanked:
                    blanked.append(name)
        fixed_by_id[id(header)] = fixed
        out.append(fixed)
    warnings = [f"{keyword} is not a valid DICOM date or time: left empty in the results" for keyword in blanked]
    return out, warnings


def _date_values(header: Dataset) -> list[tuple[Tag, str, str, str]]:
    """(tag, keyword, VR, text) of each top-level single-valued DA, TM or DT element.

    Reads the elements pydicom has not converted yet as raw bytes (``Dataset.elements()``): converting all of a
    header's elements to find its few dates cost 1.4 ms a slice, 0.4 s for a 300-slice series.
    """
    found = []
    for element in header.elements():
        vr = element.VR
        if vr in (None, "UN") and dictionary_has_tag(element.tag):  # implicit VR, or a public tag sent as UN
            vr = dictionary_VR(element.tag)
        if vr not in _DATE_VRS:
            continue
        if isinstance(element, RawDataElement):
            raw = element.value or b""
            if b"\\" in raw:  # VM > 1: not checked (the writers copy single dates)
                continue
            text = raw.decode("latin-1").rstrip("\x00 ")
        else:
            if element.VM > 1:
                continue
            text = str(element.value or "")
        tag = Tag(element.tag)
        found.append((tag, keyword_for_tag(tag) or str(tag), vr, text))
    return found
