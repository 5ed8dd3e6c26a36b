"""PACS integration: DICOMweb pull and push, a DICOM C-STORE listener, and a durable outbox for results.

Results go back into the source study: the SEG and SR (``twin_imaging.io``) and a secondary capture of each overlay
for viewers without SEG support, all carrying the source study's patient and study identifiers.
"""
