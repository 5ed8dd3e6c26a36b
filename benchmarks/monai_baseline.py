"""The standard route, for comparison: the same network weights through PyTorch + MONAI.

MONAI transforms for the preprocessing (``Orientation``, ``Spacing``, ``ScaleIntensityRange`` on a MetaTensor), the
card's window, ``sliding_window_inference`` with the card's patch size, overlap and Gaussian weighting, argmax, and
the labels back on the source grid with ``ResampleToMatch`` (nearest), as a MONAI bundle's inference does; the
DICOM series read by MONAI's ``LoadImage`` with its ``PydicomReader`` (``monai_read``). The
network is rebuilt from the card's recipe (``training.networks``) and loaded with the ONNX file's own initializers,
matched by parameter name, so both routes run exactly the same weights. Needs the [train] extra (torch, MONAI).
"""

from __future__ import annotations

import ast
import time

import numpy as np


def torch_network(package):
    """The card's network with the package's ONNX weights (every parameter and buffer matched by name)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from training.networks import build_network

    card = package.card
    model = onnx.load(str(package.onnx_path))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    # the card says e.g. "MONAI unet {'channels': [16, ...], 'strides': [...], 'num_res_units': 2}"
    _, name, kwargs = card.training.network.split(" ", 2)
    network = build_network(
        name,
        in_channels=card.inference.in_channels,
        out_channels=card.inference.num_classes,
        kwargs=ast.literal_eval(kwargs),
    )
    state = network.state_dict()
    # PReLU slopes leave the exporter under generated names: take them from the PRelu nodes, in graph order, which
    # is the network's own order
    constants = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"
    }
    slopes = [weights.get(n.input[1], constants.get(n.input[1])) for n in model.graph.node if n.op_type == "PRelu"]
    prelu = [name for name in state if name.endswith(".A.weight") and name not in weights]
    if len(slopes) == len(prelu):
        weights.update({name: slope.reshape(state[name].shape) for name, slope in zip(prelu, slopes, strict=True)})
    missing = [name for name in state if name not in weights and state[name].dtype.is_floating_point]
    if missing:
        raise ValueError(f"the ONNX file lacks {len(missing)} parameters of the rebuilt network, e.g. {missing[:3]}")
    network.load_state_dict(
        {name: torch.from_numpy(np.array(weights[name])) if name in weights else value for name, value in state.items()}
    )
    return network.eval()


def monai_read(study_folder) -> tuple[object, float]:
    """The DICOM series as MONAI reads it (``LoadImage`` with its ``PydicomReader``: pydicom, no ITK), and the
    seconds taken: the standard route's own first step."""
    from monai.data import PydicomReader
    from monai.transforms import LoadImage

    start = time.perf_counter()
    image = LoadImage(reader=PydicomReader(), image_only=True, ensure_channel_first=True)(str(study_folder))
    return image, time.perf_counter() - start


def monai_route(image, package, network, *, threads: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Labels on the source grid, that grid's RAS affine and the seconds of each step, from a decoded image: a
    ``Volume`` (RAS affine; our reader) or a channel-first MONAI ``MetaTensor`` (``monai_read``)."""
    import torch
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import Orientation, ResampleToMatch, ScaleIntensityRange, Spacing

    torch.set_num_threads(threads)
    card = package.card
    spec = card.preprocessing
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if not isinstance(image, MetaTensor):
        image = MetaTensor(torch.from_numpy(np.asarray(image.array, dtype=np.float32))[None], affine=image.affine_ras)
    source = image
    image = Orientation(axcodes=spec.orientation)(image)
    image = Spacing(pixdim=spec.spacing_mm, mode="bilinear")(image)
    window = spec.intensity
    image = ScaleIntensityRange(
        window.window_min_hu, window.window_max_hu, window.output_min, window.output_max, clip=window.clip
    )(image)
    timings["preprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        logits = sliding_window_inference(
            image[None].as_tensor(),
            roi_size=card.inference.patch_size_voxels,
            sw_batch_size=1,
            predictor=network,
            overlap=card.inference.overlap,
            mode="gaussian",
            sigma_scale=card.inference.sigma_scale,
        )
    timings["network"] = time.perf_counter() - start
    start = time.perf_counter()
    labels = MetaTensor(torch.argmax(logits[0], dim=0, keepdim=True).to(torch.float32), affine=image.affine)
    back = ResampleToMatch(mode="nearest")(labels, img_dst=source)
    result = back[0].numpy().astype(np.uint8)
    timings["argmax + back to source"] = time.perf_counter() - start
    return result, np.asarray(source.affine, dtype=np.float64), timings
