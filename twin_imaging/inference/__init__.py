"""Network execution without torch: ONNX Runtime sessions and sliding-window prediction with Gaussian blending."""

from twin_imaging.inference.sessions import choose_providers, create_session, run_session
from twin_imaging.inference.sliding_window import gaussian_importance_map, sliding_window_predict, window_starts

__all__ = [
    "choose_providers",
    "create_session",
    "gaussian_importance_map",
    "run_session",
    "sliding_window_predict",
    "window_starts",
]
