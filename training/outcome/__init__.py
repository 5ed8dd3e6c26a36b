"""Outcome models for nephrectomy (KiTS23): cross-validated baselines, calibration, bootstrap intervals, ONNX export."""
