"""Post-operative outcome prediction (first target: nephrectomy, from KiTS23).

``kidney_features``: kidney, tumour and cyst volumes, tumour geometry and R.E.N.A.L.-like points from a label map;
``resection``: a virtual partial or radical nephrectomy and the parenchyma it leaves.
"""
