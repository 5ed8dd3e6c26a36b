"""The BentoML inference API: a thin layer over ``twin_imaging``, torch-free. Never imports ``training``.

Built in issue #7; see ../shared/DESIGN.md ("Users and their doors").
"""
