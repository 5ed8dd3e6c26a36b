"""Training kit (Lightning + MONAI, YAML-driven) and ONNX export. Imports ``twin_imaging``; never ``serving``.

Built in issue #3; see ../shared/DESIGN.md ("Models") for what lands here.
"""
