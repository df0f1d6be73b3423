"""Export: a classifier -> its forward graph -> ``features`` (with the head's gradient)
and ``scores`` (masked inputs) sharing one weights file -> parity check -> TensorRT
engines -> ``manifest.json``.

Modules: `torch_to_onnx` (forward graph of a torch model), `onnx_classifier` (forward
graph of an ONNX classifier), `backward` (the head's backward as ONNX nodes, one module per operator family), `graphs`
(the two engine graphs), `weights` (one shared weights file), `parity` (the self-check),
`tensorrt_build` (EngineFromOnnx), `quantize` (INT8), `pipeline` (the whole export,
atomic). All need the ``export`` extra (torch for torch models, onnx).
"""
